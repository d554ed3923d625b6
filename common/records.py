"""Names of everything that travels in Flower messages, in one place and one style, and how its
size is counted."""

ARRAYS = "arrays"  # ArrayRecord with the trainable tensors (LoRA + projections)
CONFIG = "config"  # ConfigRecord sent with each train instruction
METRICS = "metrics"  # MetricRecord a client replies with

# ConfigRecord keys (server -> client)
SERVER_ROUND = "server-round"
EVAL_TARGET = "eval-target"  # "valid" or "test": which held-out item a client ranks
RELEASE = "release"  # distributed DP: which statistic a secure release sums
RELEASE_ITEM_COUNTS = "item-counts"  # users' most recent training items, counted per item
RELEASE_HEAD_GRAM = "head-gram"  # co-occurrences of users' recent head items (upper triangle)
RELEASE_HEAD = "head"  # the head items' catalogue rows, comma-separated (public: from the counts)

# MetricRecord keys (client -> server); all numeric
NUM_EXAMPLES = "num-examples"
NUM_STEPS = "num-steps"
EXAMPLES_SEEN = "examples-seen"  # examples processed this round (steps x batch size)
TRAIN_LOSS = "train-loss"
TRAIN_LOSS_FIRST = "train-loss-first"
TRAIN_LOSS_LAST = "train-loss-last"
TRAIN_SECONDS = "train-seconds"
EPSILON = "epsilon"  # local DP: the store's epsilon spent so far, at its policy's delta
UNIFORM_WEIGHT = "uniform-weight"  # DP: every client weighs the same in the average
EVAL_USERS = "eval-users"  # users a client ranked: exact, or noised when its policy noises evaluation
# Evaluation replies carry SUMS over the client's users (hr@K, ndcg@K, mrr) beside EVAL_USERS;
# the server divides the totals. Noised sums stay unbiased; means of noised parts would not.

# node_config keys (set per SuperNode; in simulation by Flower)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
STORE = "store"  # path of the node's encrypted local store
KEY_FILE = "key-file"  # unlocks the store, or:
PASSPHRASE_FILE = "passphrase-file"
PASSPHRASE_ENV = "passphrase-env"  # name of an environment variable holding the passphrase
POLICY = "policy"  # path of the device's privacy policy (default: <store>.policy.toml)
NODE_DEVICE = "device"  # where this node computes: 'auto', 'cpu' or 'cuda' (overrides the run's `device`)

# Error codes of replies that carry no content. A client's error reply holds one of these codes
# and its fixed reason below, never free text: no paths, ids, values or exception messages.
EGRESS_REFUSED = 4101  # the reply would have sent something outside the allow-list
BUDGET_EXHAUSTED = 4102  # this round or evaluation would pass the device's privacy budget
POLICY_REFUSED = 4103  # the run asks for less privacy than the device's policy allows
TOO_FEW_USERS = 4104  # fewer users than the policy's minimum per reply
EVALUATION_LIMIT = 4105  # more evaluation queries in one round than the policy allows
LEDGER_UNAVAILABLE = 4106  # the privacy ledger is missing, rolled back, tampered with or busy
STORE_UNAVAILABLE = 4107  # the local store or its policy cannot be opened
BAD_REQUEST = 4108  # the server's message is malformed (tensors, config)
CLIENT_FAILED = 4109  # anything else went wrong on the client (details stay in its local log)

ERROR_REASONS = {
    EGRESS_REFUSED: "egress-refused: the reply held something outside the allow-list",
    BUDGET_EXHAUSTED: "budget-exhausted: this would pass the device's privacy budget",
    POLICY_REFUSED: "policy-refused: the run asks for less privacy than the device's policy allows",
    TOO_FEW_USERS: "too-few-users: fewer users than the device's policy minimum",
    EVALUATION_LIMIT: "evaluation-limit: no more evaluations this round",
    LEDGER_UNAVAILABLE: "ledger-unavailable: the device's privacy ledger cannot be used",
    STORE_UNAVAILABLE: "store-unavailable: the device's store or policy cannot be opened",
    BAD_REQUEST: "bad-request: the server's message is malformed",
    CLIENT_FAILED: "client-failed: see the device's own log",
}


TENSOR_DTYPES = frozenset({"float32", "float16"})  # what a train reply's tensors may be (`upload-dtype`)


def array_bytes(record) -> int:
    """Payload bytes of an ArrayRecord: its tensors' data as sent (fp16 or fp32)."""
    return sum(len(array.data) for array in record.values())


def payload_bytes(content) -> int:
    """Payload bytes of a message's records: tensors' data, bytes and strings, 8 per number."""

    def size(value) -> int:
        if isinstance(value, (bytes, str)):
            return len(value)
        if isinstance(value, list):
            return sum(size(v) for v in value)
        return 8

    return sum(
        array_bytes(record)
        if hasattr(record, "to_torch_state_dict")  # an ArrayRecord
        else sum(size(v) for v in record.values())
        for record in content.values()
    )
