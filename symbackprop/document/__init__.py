"""Documents — the handout and the exercise sheets — built once, rendered to LaTeX and Markdown.

* ``nodes``: the document tree (sections, paragraphs, equations, tables, figures);
  ``tex`` and ``markdown`` write it, through the skeletons in ``templates/``.
* ``handout``: the teaching handout of a network (``render_handout``); its drawings come
  from ``figures``, its worked example from ``worked``.
* ``exercises``: exercise sheets and their answer keys (``render_exercises``).
* ``example``: the worked example's numbers, computed by the engine; ``numbers`` how they
  are written; ``common`` what the handout and the exercises both write.

Imports the engine (``network``, ``derive``, ``latex``, ``ops`` and what they build on),
numpy, sympy and jinja2; nothing of symbackprop imports it but ``cli``.
"""

from .example import WorkedExample, worked_example
from .exercises import KINDS as EXERCISE_KINDS
from .exercises import exercise_set, exercises
from .exercises import render as render_exercises
from .handout import default_detail, handout
from .handout import render as render_handout

__all__ = [
    "EXERCISE_KINDS", "WorkedExample", "default_detail", "exercise_set", "exercises", "handout", "render_exercises",
    "render_handout", "worked_example",
]
