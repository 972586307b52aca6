"""KEMDy19/20, text + speech: emotion categories (7 classes, multi-label); speech projected to text width and added."""

from common.cli import main

if __name__ == "__main__":
    main(modality="multimodal", task="classification", fusion="element_wise_add")
