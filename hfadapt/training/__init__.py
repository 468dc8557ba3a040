"""Above the tasks: the training coordinator (setup -> fit -> finish), the Accelerate loop,
checkpoints, precision, compile, data-loader workers, throughput and the memory plan."""
