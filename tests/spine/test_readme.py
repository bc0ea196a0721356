"""The README's recipe reference is the code's: regenerate with `python -m lamina.recipe_doc`."""

from pathlib import Path

from lamina.recipe_doc import splice


def test_readme_recipe_reference_matches_the_recipe_models():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert splice(readme) == readme, "README recipe reference is stale: run `python -m lamina.recipe_doc`"
