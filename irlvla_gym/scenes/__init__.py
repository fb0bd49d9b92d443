"""The canonical Scene, its sources (adapters) and the scene store."""

from irlvla_gym.scenes.scene import (
    AGENT_CATEGORIES, COMMANDS, LIGHT_STATES, Agents, EgoState, EgoVehicle, MapData, PolygonSet, Ragged, Scene,
    SceneMetadata, SceneValidationError,
)
from irlvla_gym.scenes.sources import SkippedItem

__all__ = [
    "AGENT_CATEGORIES", "COMMANDS", "LIGHT_STATES", "Agents", "EgoState", "EgoVehicle", "MapData", "PolygonSet",
    "Ragged", "Scene", "SceneMetadata", "SceneValidationError", "SkippedItem",
]
