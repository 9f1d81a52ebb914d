"""What the managed node allows in each lifecycle state (ROS-free).

The node follows ROS 2's managed-node state machine (design.ros2.org "Managed nodes"):
unconfigured -> configure -> inactive -> activate -> active, and back by deactivate and
cleanup; shutdown from any of them. Parameters are read at configure, so settings other
than the vocabulary change while unconfigured only; the vocabulary changes while active
(the service, or the classes/things parameters), or by its parameters while
unconfigured (read at configure). While inactive a vocabulary request is refused, with
the reason: it is never queued for later.
"""

from __future__ import annotations

UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = "unconfigured", "inactive", "active", "finalized"
VOCABULARY_PARAMETERS = frozenset({"classes", "things"})


def parameter_refusal(state: str, names) -> str | None:
    """Why setting these parameters is refused in `state`, or None when it is allowed.
    Vocabulary parameters while active go through the vocabulary's own checks."""
    names = set(names)
    settings = sorted(names - VOCABULARY_PARAMETERS)
    if settings and state != UNCONFIGURED:
        return (f"{', '.join(settings)} {'is' if len(settings) == 1 else 'are'} read at configure: set while the node is "
                f"unconfigured (it is {state}; `ros2 lifecycle set <node> cleanup` first, configure after)")
    if names & VOCABULARY_PARAMETERS and state not in (UNCONFIGURED, ACTIVE):
        return vocabulary_refusal(state)
    return None


def vocabulary_refusal(state: str) -> str | None:
    """Why a vocabulary request (service) is refused in `state`, or None."""
    if state == ACTIVE:
        return None
    if state == UNCONFIGURED:
        return ("the node is unconfigured: no model is loaded. Set the 'classes' (and 'things') parameters, which "
                "configure reads, or call this service once the node is active")
    return f"the node is {state}: the vocabulary can be changed while it is active (`ros2 lifecycle set <node> activate`)"
