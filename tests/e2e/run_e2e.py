"""Run every tests/e2e/test_*.py against $FOSR_BIN (default ./fosr-collector).

  /usr/bin/python3 tests/e2e/run_e2e.py [-q] [-x] [PATTERN ...]

PATTERNs select tests by substring of their id (as unittest's -k).  The last
line is "E2E_COUNTS passed=N failed=N skipped=N" for tests/run.sh; the exit
status is non-zero when a test failed or errored.  Each test gets at most
FOSR_TEST_TIMEOUT seconds (default 300) before it is interrupted.
"""

import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout("test exceeded FOSR_TEST_TIMEOUT")


class TimedResult(unittest.TextTestResult):
    limit = int(os.environ.get("FOSR_TEST_TIMEOUT", "300"))

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.succeeded = set()

    def addSuccess(self, test):
        super().addSuccess(test)
        self.succeeded.add(test.id())

    def startTest(self, test):
        self._t0 = time.time()
        signal.alarm(self.limit)
        super().startTest(test)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)
        if self.showAll:
            self.stream.writeln("    (%.1fs)" % (time.time() - self._t0))


def main(argv):
    verbosity = 2
    failfast = False
    patterns = []
    for a in argv:
        if a == "-q":
            verbosity = 1
        elif a == "-x":
            failfast = True
        else:
            patterns.append(a if "*" in a else "*%s*" % a)
    signal.signal(signal.SIGALRM, _alarm)
    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = patterns
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    binary = os.environ.get("FOSR_BIN", os.path.join(HERE, "..", "..", "fosr-collector"))
    print("e2e: %s, %d tests" % (os.path.abspath(binary), suite.countTestCases()), flush=True)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=verbosity, failfast=failfast,
                                     resultclass=TimedResult)
    res = runner.run(suite)
    # a test can fail twice (in the test and in tearDown): count tests, not reports
    failed_ids = {t.id() for t, _ in res.failures + res.errors}
    failed_ids |= {t.id() for t in res.unexpectedSuccesses}
    failed = len(failed_ids)
    skipped = len(res.skipped)
    # a test that passed its body but failed in tearDown is a failure
    passed = len(res.succeeded - failed_ids)
    if res.failures or res.errors:
        print("failed tests:")
        for t in sorted(failed_ids):
            print("  " + t)
    print("E2E_COUNTS passed=%d failed=%d skipped=%d" % (passed, failed, skipped), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
