"""One exception root for the whole product.

Every error a user can meet derives from :class:`TesseraError` and says what to
do next. The CLI catches ``TesseraError`` and prints its message without a
traceback.
"""


class TesseraError(Exception):
    """Root of every Tessera error. The message tells the user what to do."""


class ConfigError(TesseraError):
    """A configuration file, flag or environment variable is wrong or missing."""


class ChainError(TesseraError):
    """Talking to the chain failed (connection, deployment file, reverted transaction)."""


class ContractError(ChainError):
    """A transaction or call reverted with a decoded Solidity custom error.

    ``name`` is the Solidity error name (e.g. ``JobPlanGap``), ``args`` its
    decoded arguments by name.
    """

    def __init__(self, name: str, args: dict, message: str):
        super().__init__(message)
        self.name = name
        self.args_by_name = args


# Solidity error name -> what to do; formatted with the error's arguments. The JobPlan.check
# errors live here because Python raises them too (PlanError); chain.abi adds the rest.
PLAN_HINTS: dict[str, str] = {
    "JobPlanBadReplicas": "plan replicas are malformed at hop {hop} (replica {replica}); need 1..8 replicas in order",
    "JobPlanHopJunk": "hop {hop} has bits set above bit 200 ({word:#x}); pack hops with proto.types.pack_hop",
    "JobPlanGap": "replica {replica} leaves blocks [{expectedStart}, {start}) uncovered at hop {hop}; re-plan",
    "JobPlanOverlap": "replica {replica} hop {hop} starts at {start}, before the previous hop ended "
                      "({expectedStart}); re-plan",
    "JobPlanEmptyHop": "replica {replica} hop {hop} has an empty span [{start}, {end}); re-plan",
    "JobPlanPastEnd": "replica {replica} hop {hop} ends at {end}, past the model's {numBlocks} blocks; re-plan",
    "JobPlanBadStandby": "replica {replica} hop {hop} is a standby that does not directly follow a primary "
                         "with its exact span; put each standby right after the hop it backs",
    "JobPlanTooManyHops": "replica {replica} has more than {maxWords} hops (at hop {hop}); use fewer, longer spans",
    "JobPlanIncomplete": "replica {replica} stops at block {coveredTo} of {numBlocks}; re-plan to cover every block",
    "JobPlanNodeReused": "node {node} appears twice in the plan; replicas and standbys must be node-disjoint",
}


def describe(name: str, args: dict, hint: str) -> str:
    """``Name(k=v, ...): hint``, the one format of a named contract error's message."""
    argstr = ", ".join(f"{k}={v}" for k, v in args.items())
    return f"{name}({argstr}): {hint}" if hint else f"{name}({argstr})"


class PlanError(TesseraError):
    """A plan breaks a rule of ``JobPlan.check``, found before sending it.

    ``name`` and ``args_by_name`` are the Solidity error and arguments that
    ``submitJob`` would revert with (as on :class:`ContractError`).
    """

    def __init__(self, name: str, **args):
        super().__init__(describe(name, args, PLAN_HINTS[name].format(**args)))
        self.name = name
        self.args_by_name = args


class ModelError(TesseraError):
    """A model cannot be found, converted, loaded or verified."""


class WeightHashMismatch(ModelError):
    """Local weights do not match the commitment in the ModelRegistry."""


class CodecError(TesseraError):
    """An activation payload is malformed (shape, length, NaN/Inf, size)."""


class ProtocolError(TesseraError):
    """A hop message is unsigned, mis-signed, from the wrong sender or out of order."""


class RoutingError(TesseraError):
    """No valid plan exists for the request; the message says which blocks are short."""


class JobError(TesseraError):
    """A job cannot be submitted, run or settled."""


class JobInputError(JobError):
    """The job's input can never run on its model (empty prompt, wrong kind, too long): trying
    again cannot help, so nodes report it once and let the job end by the contract's rules."""
