"""KEMDy19/20, text + speech: emotions and valence/arousal together; speech projected to text width and added."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="total", fusion="element_wise_add")
