"""KEMDy19/20, text only: valence and arousal (1-5) from the transcript (KLUE BERT)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="text", task="regression")
