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

# The course's settings and grading hooks, the same for every course directory (course copies, the hub
# image's /etc/jupyter/nbgrader_config.py, the tests): course id, 600 s per cell (interrupted, then killed),
# the answer-cell stubs, deleted cells restored at autograde time, and course_lib/nbgrader_hooks.py
# (INSTRUCTORS.md "Grading safely"): before every test cell the kernel's grading helpers, references,
# builtins and IPython hooks are restored; a dead kernel costs only its cells; duplicated grade ids no
# longer fail a submission; feedback shows no hidden tests. A kernel memory limit: COURSE_GRADING_MEMORY_MB (MiB).
from course_lib import course_grading  # noqa: E402

course_grading.configure(c)
