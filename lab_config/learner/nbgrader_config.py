"""nbgrader in a self-study learner's JupyterLab (`./course.sh lab`): the notebook toolbar's Validate button
runs a notebook with the course's settings. Found through JUPYTER_CONFIG_PATH, which course.sh sets to this folder."""

from course_lib import course_grading

course_grading.configure(get_config())  # noqa: F821  (injected by nbgrader/traitlets)
