"""The registry of training objectives: the pair objective a recipe names, bound to its model.

It sits above the objectives (dpo, reward), which take their shared pair batching from
lamina.data.pairs below them, so no objective imports another through it.
"""

from __future__ import annotations

from lamina.recipe import Recipe
from lamina.train.objectives.dpo import DPO
from lamina.train.objectives.reward import RewardObjective


def build_objective(recipe: Recipe, model, plan: str):
    """The pair objective named by `train.objective`, bound to this model."""
    if recipe.train.objective == "dpo":
        return DPO(recipe.dpo, model, recipe.method.name)
    return RewardObjective(model)
