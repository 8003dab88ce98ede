"""The lab: score-matching objectives and samplers compared on toys with exact scores
(--mode=experiment)."""
