"""KEMDy19/20, speech only: valence and arousal (1-5) from the recording (wav2vec2)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="speech", task="regression")
