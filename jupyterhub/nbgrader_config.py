"""nbgrader configuration for every user of the course image (/etc/jupyter/nbgrader_config.py).

Learners and instructors find the course's exchange here; the instructor's own course directory
(the repository, mounted at ~/course) adds its nbgrader_config.py on top when run from there.
"""

c = get_config()  # noqa: F821

c.CourseDirectory.course_id = "quantization-course"
c.Exchange.root = "/srv/nbgrader/exchange"
c.Exchange.path_includes_course = False
