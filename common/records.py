"""Names of everything that travels in Flower messages, in one place and one style."""

ARRAYS = "arrays"  # ArrayRecord with the trainable tensors (LoRA + projections)
CONFIG = "config"  # ConfigRecord sent with each train instruction
METRICS = "metrics"  # MetricRecord a client replies with

# ConfigRecord keys (server -> client)
SERVER_ROUND = "server-round"

# MetricRecord keys (client -> server); all numeric
NUM_EXAMPLES = "num-examples"
NUM_STEPS = "num-steps"
EXAMPLES_SEEN = "examples-seen"  # examples processed this round (steps x batch size)
TRAIN_LOSS = "train-loss"
TRAIN_LOSS_FIRST = "train-loss-first"
TRAIN_LOSS_LAST = "train-loss-last"
TRAIN_SECONDS = "train-seconds"

# node_config keys (set per SuperNode; in simulation by Flower)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
