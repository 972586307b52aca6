"""KEMDy19/20, speech only: emotion categories (7 classes, multi-label) from the recording (wav2vec2)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="speech", task="classification")
