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

# The exchange (release, fetch, submit, collect, feedback): $COURSE_EXCHANGE, else exchange/ in this clone
# (git-ignored). nbgrader's default folder does not exist on a fresh machine, so the Formgrader warned and the
# Assignment List said "Error fetching courses!". Created with mode 1777, as nbgrader wants: every learner
# writes into it, the sticky bit keeps each one's files their own (INSTRUCTORS.md, "Running a workshop on one
# machine"). On JupyterHub (JUPYTERHUB_USER set) the image's /etc/jupyter/nbgrader_config.py names the shared
# exchange: kept unless COURSE_EXCHANGE says otherwise.
_exchange = os.environ.get("COURSE_EXCHANGE") or (
    None if os.environ.get("JUPYTERHUB_USER") else os.path.join(c.CourseDirectory.root, "exchange"))
if _exchange:
    c.Exchange.root = _exchange
    if not os.path.isdir(_exchange):
        try:
            os.makedirs(_exchange)
            os.chmod(_exchange, 0o1777)
        except OSError:
            pass  # nbgrader says what is wrong with the folder when a command uses it

# The course's settings and grading hooks, the same for every course directory (course copies, the hub
# image's /etc/jupyter/nbgrader_config.py, the tests): course id, 600 s per cell (interrupted, then killed),
# the answer-cell stubs, deleted cells restored at autograde time, and course_lib/nbgrader_hooks.py
# (INSTRUCTORS.md "Grading safely"): before every test cell the kernel's grading helpers, references,
# builtins and IPython hooks are restored; a dead kernel costs only its cells; duplicated grade ids no
# longer fail a submission; feedback shows no hidden tests. A kernel memory limit: COURSE_GRADING_MEMORY_MB (MiB).
from course_lib import course_grading  # noqa: E402

course_grading.configure(c)
