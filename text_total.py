"""KEMDy19/20, text only: emotion categories and valence/arousal together from the transcript (KLUE BERT)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="text", task="total")
