"""nbgrader configuration of the course (nbgrader 0.9).

solutions/<assignment>/<name>.ipynb is the source (full solutions, visible and hidden tests);
notebooks/<assignment>/<name>.ipynb is the generated student release (committed; regenerate
with `python scripts/generate_notebooks.py`). One assignment per notebook.
"""

import os

c = get_config()  # noqa: F821  (injected by nbgrader/traitlets)

c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.course_id = "quantization-course"

# A cell may train a small model or build a C++ extension: a laptop CPU needs more than the
# default 30 s per cell. A notebook that hangs is still stopped (interrupted, then killed).
c.Execute.timeout = 600
c.Execute.interrupt_on_timeout = True

# What the learner sees in an answer cell.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A learner who deletes a locked or graded cell gets it back at autograde time.
c.OverwriteCells.add_missing_cells = True

# Grading that cannot be fooled or broken (course_lib/nbgrader_hooks.py, INSTRUCTORS.md "Grading safely"):
# before every test cell the kernel's grading helpers, references, builtins and IPython hooks are
# restored; a dead kernel costs only its cells; duplicated grade ids no longer fail a submission;
# feedback shows no hidden tests. A kernel memory limit: COURSE_GRADING_MEMORY_MB (MiB).
from course_lib import nbgrader_hooks  # noqa: E402

nbgrader_hooks.configure(c, memory_limit_mb=int(os.environ.get("COURSE_GRADING_MEMORY_MB", "0")) or None)
