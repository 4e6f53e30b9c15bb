"""streamclf worker: consume records from Kafka, classify them in micro-batches, publish results."""
