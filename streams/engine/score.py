"""Experience score of a journey (0–100).

    score = clamp(100 − Σ_pain  severity × points_per_severity × channel_weight × tier_factor
                      + Σ_survey (survey_score − neutral_survey) × survey_points, 0, 100)

* ``severity`` (1–5) comes from the rule, ``channel_weight`` from the channel of the pain
  point's anchor touchpoint (how important that touchpoint is), ``tier_factor`` from the
  customer's tier (tier A expects more, so the same failure costs more).
* An SMS survey reply with a 0–10 ``score`` moves the journey by its distance from the
  neutral value: a 10 lifts it, a 2 drops it.

Satisfaction = experience − expectation, weighted by importance (docs/design.md).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ScoreWeights(BaseModel):
    """Weights of the experience score; configurable, defaults documented here."""

    points_per_severity: float = Field(default=5.0, ge=0)
    channel_weight: dict[str, float] = Field(
        default_factory=lambda: {"web": 1.0, "call_centre": 1.3, "store": 1.2, "sms": 0.8}
    )
    tier_factor: dict[str, float] = Field(default_factory=lambda: {"A": 1.5, "B": 1.2, "C": 1.0})
    neutral_survey: float = Field(default=7.0, ge=0, le=10)
    survey_points: float = Field(default=3.0, ge=0)


DEFAULT_WEIGHTS = ScoreWeights()


def pain_penalty(
    severity: int, channel: str, tier: str, w: ScoreWeights = DEFAULT_WEIGHTS
) -> float:
    """Points one pain point takes off its journey."""
    return (
        severity
        * w.points_per_severity
        * w.channel_weight.get(channel, 1.0)
        * w.tier_factor.get(tier, 1.0)
    )


def survey_delta(survey_score: int, w: ScoreWeights = DEFAULT_WEIGHTS) -> float:
    """Points a 0–10 survey answer adds (positive) or takes off (negative)."""
    return (survey_score - w.neutral_survey) * w.survey_points


def journey_score(penalties: float, feedback: float) -> float:
    """Clamp the running total into 0–100 (rounded to 0.1)."""
    return round(min(100.0, max(0.0, 100.0 - penalties + feedback)), 1)
