"""The registry of training objectives: the pair objective a recipe names, bound to its model.

It sits above the objectives (dpo, kto, orpo, simpo, reward), which take their shared pair batching from
lamina.data.pairs below them, so no objective imports another through it.
"""

from __future__ import annotations

from lamina.recipe import Recipe
from lamina.train.objectives.dpo import DPO
from lamina.train.objectives.preference import KTO, ORPO, SimPO
from lamina.train.objectives.reward import RewardObjective


def build_objective(recipe: Recipe, model, plan: str):
    """The pair objective named by `train.objective`, bound to this model."""
    if recipe.train.objective == "dpo":
        return DPO(recipe.dpo, model, recipe.method.name)
    if recipe.train.objective == "kto":
        return KTO(recipe.kto, model)
    if recipe.train.objective == "orpo":
        return ORPO(recipe.orpo)
    if recipe.train.objective == "simpo":
        return SimPO(recipe.simpo)
    return RewardObjective(model)
