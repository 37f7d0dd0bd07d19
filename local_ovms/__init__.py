"""A local OpenVINO Model Server-compatible server for MediaPipe Python-node servables.

Run it as ``python -m local_ovms --config_path CONFIG --port 9000 --rest_port 8000``. It loads the
``mediapipe_config_list`` graphs of an OVMS ``config.json``, imports each ``PythonExecutorCalculator``
node's handler (``class OvmsPythonModel``), and serves them over KServe gRPC
(``inference.GRPCInferenceService``, the protos ``tritonclient`` ships) and KServe v2 REST, with
Prometheus ``/metrics`` on the REST port. The behaviour it copies is written down in
``/work/shared/ovms-python-node-contract.md``.

Modules: ``config`` (config.json), ``pbtxt`` (protobuf text format), ``graph`` (graph model and
validation), ``pyovms`` (the ``pyovms.Tensor`` stand-in), ``handler`` (handler import and life cycle),
``executor`` (one graph instance per stream), ``registry`` (loaded graphs and their state), ``kserve``
(request/response conversion), ``grpc_service``, ``rest``, ``metrics``, ``lifecycle`` (running work and
shutdown drain), ``__main__`` (command line and signals).
"""
