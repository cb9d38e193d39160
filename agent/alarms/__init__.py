"""The alarms room: rules from the config judged on the gateway, and who is told.

:mod:`~agent.alarms.evaluate` is pure (observations in, raises and clears out);
:mod:`~agent.alarms.words` turns a change into words and the contract's retained
``alarms`` message; :mod:`~agent.alarms.webhook` POSTs each change to a URL from
a bounded queue, off the polling path. The runtime (agent/runtime/alarms.py)
feeds the evaluator once a second from the agent's status and stores the
messages like any other. It imports the config's models, the contract and the
words (agent/i18n); nothing of the runtime, the core or the views.
"""

from agent.alarms.evaluate import Alarm, Change, Evaluator, Observation
from agent.alarms.words import alarm_message, describe, describe_change

__all__ = [
    "Alarm",
    "Change",
    "Evaluator",
    "Observation",
    "alarm_message",
    "describe",
    "describe_change",
]
