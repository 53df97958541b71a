"""Around the one loop (`distill.engine`): how K models run a step (`replicas`), groups of models
of one run (`jobs`), evaluation and metrics, language-model helpers (`lm`), and what every kind's
run does first and last (`experiment`); `runner` is `distill train`."""
