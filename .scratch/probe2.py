from collections import Counter
from hypothesis import settings
from tests.unit import test_approvals_machine as m
stats = Counter()
orig_restart = m.ApprovalInterleavings.restart
def restart(self, controller_meanwhile):
    states = [self.run(self.e.state(a)) for a in self.requests]
    stats[("restart", self.crashed, controller_meanwhile, "approved" in states)] += 1
    return orig_restart(self, controller_meanwhile)
import hypothesis.stateful as hs
m.ApprovalInterleavings.restart = hs.rule(controller_meanwhile=hs.st.booleans() if hasattr(hs,'st') else __import__('hypothesis.strategies').strategies.booleans())(restart)
orig_react = m.ApprovalInterleavings.react
m.ApprovalInterleavings.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
import unittest
r = unittest.TextTestRunner().run(unittest.defaultTestLoader.loadTestsFromTestCase(m.ApprovalInterleavings.TestCase))
print(stats)
