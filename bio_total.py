"""KEMDy19/20, bio-signals only: emotion categories and valence/arousal together from the speaker's wristband signals
(EDA, skin temperature, heartbeat) during the utterance (common.bio)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="bio", task="total")
