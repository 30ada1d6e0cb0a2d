"""Build the pure engine's configuration from :class:`Settings` (glue; the engine stays pure)."""

from __future__ import annotations

from streams.config import Settings
from streams.engine.care import CareEngine, load_policy
from streams.engine.identity import IdentityLimits
from streams.engine.journey import EngineConfig, JourneyEngine
from streams.engine.rules import RuleSet, load_rules


def engine_config(settings: Settings) -> EngineConfig:
    """Lateness, inactivity gap and state bounds from settings."""
    return EngineConfig(
        lateness_seconds=settings.lateness_hours * 3600,
        inactivity_gap_seconds=settings.inactivity_gap_hours * 3600,
        max_steps=settings.max_steps_per_customer,
    )


def identity_limits(settings: Settings) -> IdentityLimits:
    """Bounds of the anonymous buffer from settings."""
    return IdentityLimits(
        max_held=settings.max_held_per_identifier,
        max_age_seconds=settings.max_held_age_days * 86400,
    )


def rules(settings: Settings) -> RuleSet:
    """The configured rule file, or the built-in library (raises RuleFileError)."""
    return load_rules(settings.rules_file)


def care(settings: Settings) -> CareEngine:
    """The configured care policy, or the built-in one (raises CarePolicyError)."""
    return CareEngine(load_policy(settings.care_policy_file))


def build_engine(settings: Settings) -> tuple[JourneyEngine, IdentityLimits]:
    """Engine and identity limits as the worker and the backtest both use them."""
    engine = JourneyEngine(rules(settings), engine_config(settings), care=care(settings))
    return engine, identity_limits(settings)
