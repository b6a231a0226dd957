"""Fixtures shared by every test group.

Markers (setup.cfg): `docker` needs the real engine/registry/compose that scripts/run-tests.sh provides
(DOCKER_HOST, BLUEGREEN_REGISTRY); `e2e` needs the whole local fleet. Unmarked tests need neither.
"""
