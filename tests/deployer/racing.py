"""`python -m tests.deployer.racing DIR N ARGS...`: the real `bluegreen ARGS` that, right before it takes the lock,
waits until N such processes have reached that point (one file each in DIR). The N commands then write the lock
at the same instant, having all observed it free, so only the compare-and-set in S3 can decide (X2).
"""

import os
import sys
import time

from deployer import cli
from deployer.steps import LockStep


def main():
    folder, count, *argv = sys.argv[1:]
    arrived = []

    def before_step(step):
        if isinstance(step, LockStep) and not arrived:
            arrived.append(step)
            open(os.path.join(folder, str(os.getpid())), "w").close()
            deadline = time.monotonic() + 30
            while len(os.listdir(folder)) < int(count) and time.monotonic() < deadline:
                time.sleep(0.01)

    return cli.main(argv, seams=cli.Seams(before_step=before_step))


if __name__ == "__main__":
    sys.exit(main())
