"""Every name Lepton writes into Kubernetes, defined once.

The API's group and version, the labels and annotations on pods, Jobs and
nodes, the resource names GPU device plugins register, the kube-scheduler
profile, and the Lepton scheduler's score bounds. Every other module imports them from
here; ``tests/test_one_of_each.py`` fails on a second definition (a literal
``lepton.dev/``, ``nvidia.com/gpu`` or ``lepton-scheduler`` elsewhere in the
packages).
"""

from __future__ import annotations

GROUP = "lepton.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The kube-scheduler profile that calls the Lepton scheduler: the ``schedulerName`` of Lepton
# pods, and the component name on the Lepton scheduler's Events.
SCHEDULER_NAME = "lepton-scheduler"

# The extended resource NVIDIA's device plugin registers (time-slicing and MPS keep it).
RESOURCE_GPU = "nvidia.com/gpu"
# The device plugin's MIG resources under its "mixed" strategy: nvidia.com/mig-3g.40gb, ...
RESOURCE_MIG_PREFIX = "nvidia.com/mig-"

# The node label GPU feature discovery writes, e.g. "NVIDIA-A40"; the profiles map it to a model.
LABEL_GPU_PRODUCT = f"{RESOURCE_GPU}.product"
# GPU feature discovery's GPU count per node.
LABEL_GPU_COUNT = f"{RESOURCE_GPU}.count"
# GPU feature discovery's time-slicing factor: each GPU is advertised as this many
# nvidia.com/gpu (the node's allocatable is GPUs x replicas).
LABEL_GPU_REPLICAS = f"{RESOURCE_GPU}.replicas"
# Kubernetes' well-known node labels, which a local fleet writes and spreading reads.
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_HOSTNAME = "kubernetes.io/hostname"
# Lepton's own node label naming a GPU profile (local fleets; fallback to LABEL_GPU_PRODUCT).
LABEL_LEPTON_GPU_MODEL = f"{GROUP}/gpu-model"

# Labels tying pods and Jobs to their LeptonJob.
LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_JOB_UID = f"{GROUP}/job-uid"
LABEL_BUDGET_NAME = f"{GROUP}/budget-name"
# A kwok fleet's pods: set when the local cluster's workload runner lets a pod finish.
ANNOTATION_KWOK_RELEASE = f"{GROUP}/kwok-release"
# The simulator's replay pods, by the policy that placed them.
LABEL_REPLAY = f"{GROUP}/replay"
# The image of the replay's pods (kwok runs no container, so it is never pulled).
REPLAY_IMAGE = f"{GROUP}/replay"
# Per-node fact: the host's idle draw without its GPUs (watts), overriding the default.
LABEL_HOST_IDLE_WATTS = f"{GROUP}/host-idle-watts"

# Annotations carrying the hints.
ANNOTATION_ENERGY_POLICY = f"{GROUP}/energy-policy"
ANNOTATION_WORK_GPU_HOURS = f"{GROUP}/work-reference-gpu-hours"
ANNOTATION_GPU_MODELS = f"{GROUP}/gpu-models"
ANNOTATION_GPUS_PER_REPLICA = f"{GROUP}/gpus-per-replica"
ANNOTATION_REPLICAS = f"{GROUP}/replicas"
ANNOTATION_DEADLINE_TIME = f"{GROUP}/deadline-time"
ANNOTATION_SPREAD_ACROSS = f"{GROUP}/spread-across"
ANNOTATION_MAX_REPLICAS_PER_DOMAIN = f"{GROUP}/max-replicas-per-domain"
ANNOTATION_SPARES = f"{GROUP}/spares"
ANNOTATION_POWER_CAP = f"{GROUP}/power-cap"
ANNOTATION_BUDGET_PRESSURE = f"{GROUP}/budget-pressure"
ANNOTATION_WORKLOAD_KIND = f"{GROUP}/workload-kind"
ANNOTATION_REFERENCE_UTILIZATION_PERCENT = f"{GROUP}/reference-utilization-percent"
ANNOTATION_LIFETIME_SECONDS = f"{GROUP}/lifetime-seconds"
ANNOTATION_GPU_MILLI = f"{GROUP}/gpu-milli"
# The workload a pod belongs to, for pods without a LeptonJob (default: the pod's owner).
ANNOTATION_WORKLOAD_NAME = f"{GROUP}/workload-name"
# Written by the operator on running pods when an exhausted CapPower budget lowers their
# GPU power limit (watts); the exporter applies the lower of this and the job's powerCap.
ANNOTATION_POWER_LIMIT_WATTS = f"{GROUP}/power-limit-watts"
# How busy a pod keeps its GPUs (0..1, default 1.0): read by the exporter's model backend.
ANNOTATION_GPU_UTILIZATION = f"{GROUP}/gpu-utilization"
# The SDK's phase table (compact JSON), written by the SDK on its own pod.
ANNOTATION_PHASES = f"{GROUP}/phases"

# The reason of the Event the Lepton scheduler writes on each pod it scores (read by kubectl lepton
# explain and the demo).
EVENT_REASON_SCORED = "LeptonScored"

# The Lepton scheduler's node scores run from 0 to this (k8s.io/kube-scheduler/extender/v1
# MaxExtenderPriority); kube-scheduler scales them to its own 0..100.
MAX_SCORE = 10
