"""KEMDy19/20, bio-signals only: valence and arousal (1-5) from the speaker's wristband signals
(EDA, skin temperature, heartbeat) during the utterance (common.bio)."""

from common.cli import main

if __name__ == "__main__":
    main(modality="bio", task="regression")
