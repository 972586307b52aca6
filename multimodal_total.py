"""KEMDy19/20, text + speech: emotion categories and valence/arousal together; text and speech joined by any
fusion of the registry (--fusion, default concat)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="total")
