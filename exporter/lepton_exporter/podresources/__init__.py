"""The kubelet's pod-resources API (``podresources/v1``): which pod holds which GPU.

dcgm-exporter maps GPUs to pods this way: the kubelet lists, per container,
the device ids its device plugins handed out; the NVIDIA device plugin's ids
are GPU UUIDs. ``api_pb2*.py`` are generated from ``api.proto`` by
``generate.sh``; ``client`` is the part written by hand.
"""
