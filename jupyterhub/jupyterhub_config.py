"""JupyterHub configuration for a workshop of the quantization course (one machine, Docker).

    docker build -t quantization-course -f jupyterhub/Dockerfile .     # from the repository root
    jupyterhub -f jupyterhub/jupyterhub_config.py

Each learner gets a container of the course image (environment.yml, the course package, the student
notebooks) with a 2 GB memory limit: the notebooks peak at 0.42-1.13 GB (benchmarks/results/notebook_memory_cpu.md).
Assignments travel through nbgrader's exchange, a host directory mounted into every container at
/srv/nbgrader/exchange (world-writable with the sticky bit, as nbgrader requires). The image's
/etc/jupyter/nbgrader_config.py sets Exchange.root and CourseDirectory.course_id for every user.

Environment variables (all optional): COURSE_IMAGE, COURSE_EXCHANGE (host path of the exchange),
COURSE_INSTRUCTORS (comma-separated user names with the instructor's nbgrader extensions and the
course directory mounted), COURSE_DIR (host path of the instructor's course directory, this repository).
Authentication: replace the DummyAuthenticator (tests, a closed room) with your institution's
(OAuthenticator, LTI, PAM): everything else stays.
"""

import os

c = get_config()  # noqa: F821  (injected by JupyterHub)

COURSE_ID = "quantization-course"
IMAGE = os.environ.get("COURSE_IMAGE", "quantization-course:latest")
EXCHANGE = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")
COURSE_DIR = os.environ.get("COURSE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTRUCTORS = {u for u in os.environ.get("COURSE_INSTRUCTORS", "instructor").split(",") if u}

# The exchange must exist on the host with the permissions nbgrader checks (1777).
os.makedirs(EXCHANGE, exist_ok=True)
try:
    os.chmod(EXCHANGE, 0o1777)
except PermissionError:  # not owned by the hub's user: an administrator set it up
    pass

c.JupyterHub.bind_url = "http://0.0.0.0:8000"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("COURSE_HUB_PASSWORD", "change-me")
c.Authenticator.admin_users = set(INSTRUCTORS)
c.Authenticator.allow_all = True

# One container per learner, from the course image.
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = IMAGE
c.DockerSpawner.remove = True
c.DockerSpawner.network_name = os.environ.get("DOCKER_NETWORK_NAME", "bridge")
c.DockerSpawner.notebook_dir = "/home/jovyan"
c.DockerSpawner.default_url = "/lab/tree/notebooks/00_welcome/welcome.ipynb"
c.DockerSpawner.volumes = {
    "course-{username}": "/home/jovyan/work",  # the learner's own files survive a restart
    EXCHANGE: "/srv/nbgrader/exchange",         # assignments and submissions, shared by all
}
c.Spawner.mem_limit = "2G"        # peaks 0.42-1.13 GB per notebook (benchmarks/results/notebook_memory_cpu.md)
c.Spawner.mem_guarantee = "1G"
c.Spawner.cpu_limit = 2.0
c.Spawner.environment = {"OMP_NUM_THREADS": "2", "COURSE_ID": COURSE_ID}
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = 300


def _instructor_volumes(spawner):
    """The instructor's container also mounts the course directory (sources, gradebook)."""
    if spawner.user.name in INSTRUCTORS:
        spawner.volumes = {**spawner.volumes, COURSE_DIR: "/home/jovyan/course"}
        spawner.environment = {**spawner.environment, "NBGRADER_ROLE": "instructor"}


c.Spawner.pre_spawn_hook = _instructor_volumes

# Stop idle servers (a workshop room rarely closes its tabs).
c.JupyterHub.load_roles = [{
    "name": "idle-culler",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
}]
c.JupyterHub.services = [{
    "name": "idle-culler",
    "command": ["python3", "-m", "jupyterhub_idle_culler", "--timeout=3600"],
}]
