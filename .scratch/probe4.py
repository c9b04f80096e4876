from collections import Counter
from hypothesis import settings
from tests.unit import test_approvals_machine as m
stats = Counter()
orig = m.ApprovalInterleavings.deliver
async def deliver(self, event_id):
    before = self.crashed
    st = await self.e.state(self.requests[-1])
    await orig(self, event_id)
    after = await self.e.state(self.requests[-1])
    stats[(st, after, self.e.argo.crash_next_patch, self.crashed)] += 1
m.ApprovalInterleavings.deliver = deliver
m.ApprovalInterleavings.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
import unittest
r = unittest.TextTestRunner().run(unittest.defaultTestLoader.loadTestsFromTestCase(m.ApprovalInterleavings.TestCase))
for k,v in stats.most_common(): print(k,v)
