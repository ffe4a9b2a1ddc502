"""nbgrader configuration for every user of the course image (/etc/jupyter/nbgrader_config.py).

Learners and instructors find the course's exchange here, and every course directory on the hub grades
with the course's settings and hooks (``course_lib.course_grading.configure``, the call the repository's
nbgrader_config.py makes: autograde runs GuardedExecute, generate_feedback strips the hidden tests).
The instructor's own course directory (the repository, mounted at ~/course) adds its nbgrader_config.py
on top when run from there. tests/deployment/test_jupyterhub.py uses this file as every test user's configuration.
"""

c = get_config()  # noqa: F821

c.Exchange.root = "/srv/nbgrader/exchange"
c.Exchange.path_includes_course = False

from course_lib import course_grading  # noqa: E402  (installed in the image, see the Dockerfile)

course_grading.configure(c)  # course id, cell timeout, stubs, the grading hooks
