"""Names of everything that travels in Flower messages, in one place and one style."""

ARRAYS = "arrays"  # ArrayRecord with the trainable tensors (LoRA + projections)
CONFIG = "config"  # ConfigRecord sent with each train instruction
METRICS = "metrics"  # MetricRecord a client replies with

# ConfigRecord keys (server -> client)
SERVER_ROUND = "server-round"
EVAL_TARGET = "eval-target"  # "valid" or "test": which held-out item a client ranks

# MetricRecord keys (client -> server); all numeric
NUM_EXAMPLES = "num-examples"
NUM_STEPS = "num-steps"
EXAMPLES_SEEN = "examples-seen"  # examples processed this round (steps x batch size)
TRAIN_LOSS = "train-loss"
TRAIN_LOSS_FIRST = "train-loss-first"
TRAIN_LOSS_LAST = "train-loss-last"
TRAIN_SECONDS = "train-seconds"
EPSILON = "epsilon"  # DP: the client's epsilon spent over every round it ever trained
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
UNIFORM_WEIGHT = "uniform-weight"  # central DP: every client weighs the same in the average
EVAL_USERS = "eval-users"  # users a client ranked (also its num-examples for evaluate)
EVAL_SECONDS = "eval-seconds"

# node_config keys (set per SuperNode; in simulation by Flower)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
STORE = "store"  # path of the node's encrypted local store
KEY_FILE = "key-file"  # unlocks the store, or:
PASSPHRASE_FILE = "passphrase-file"
PASSPHRASE_ENV = "passphrase-env"  # name of an environment variable holding the passphrase

# Error codes of replies that carry no content
BUDGET_EXHAUSTED = 4102  # the client declined: this round would pass its privacy budget
