// Every physical constant and default figure the simulator uses, in one place, each with where it comes from.
// Units are SI throughout the simulator: seconds, bytes, bytes per second, kilometres, FLOP/s.
// Figures marked ASSUMPTION are not measurements: they are defaults an analyst is expected to sweep.

// ---------------------------------------------------------------------------------------------------------------
// Light in fibre
// ---------------------------------------------------------------------------------------------------------------

// Light in fibre, the Earth's radius and the calibrated route inflation live in protocol/geo.ts, shared with the
// gateway's routing so both run the same validated model.
export {
  SPEED_OF_LIGHT_KM_PER_S,
  FIBER_GROUP_INDEX,
  FIBER_DELAY_S_PER_KM,
  EARTH_MEAN_RADIUS_KM,
  ROUTE_INFLATION_CALIBRATED,
} from '../protocol/geo.ts';

/**
 * Intercept of the same fit: the distance-independent part of the average RTT between two RIPE Atlas probes, 38.08 ms.
 * It lumps both ends' access links, queueing (bufferbloat) on a minority of probes, and the distance between probes
 * and country centroids. The model runs it as it was measured: a home node's access RTT plus the GPU site's equals
 * this intercept (HOME_ACCESS_RTT_S below), so a home node's modelled RTT is the fitted line.
 */
export const ACCESS_RTT_CALIBRATED_S = 0.03808;

// ---------------------------------------------------------------------------------------------------------------
// Access links
// ---------------------------------------------------------------------------------------------------------------

/**
 * Round trip inside a data centre (a few switch hops), seconds. Alizadeh et al., "Data Center TCP" (SIGCOMM 2010)
 * report intra-datacentre RTTs of 100-250 µs without queueing.
 */
export const DATACENTER_ACCESS_RTT_S = 0.0002;

/**
 * Round trip added by a residential node's access, seconds: the calibrated intercept less the GPU site's own
 * access, so that home node ↔ GPU site RTT = ACCESS_RTT_CALIBRATED_S + 2 · d · inflation · n/c, the line validated
 * on held-out pairs. 37.9 ms is high for an idle line (the FCC's "Measuring Broadband America" reports median idle
 * latencies of ~10 ms on fibre to 15-25 ms on cable/DSL) because RIPE Atlas averages include loaded and
 * bufferbloated probes; it is what the measured RTTs say, and it is pessimistic for the edge.
 */
export const HOME_ACCESS_RTT_S = ACCESS_RTT_CALIBRATED_S - DATACENTER_ACCESS_RTT_S;

/**
 * Residential upload bandwidth, bytes/s: log-normal with a 30 Mbit/s median and a wide spread (σ = 1.0 in log
 * space, so the middle 68% spans about 11-80 Mbit/s). ASSUMPTION, order of magnitude from Ookla's Speedtest Global
 * Index (2024 global median fixed-broadband upload in the tens of Mbit/s) and the mix of asymmetric cable/DSL
 * plans (about 10-35 Mbit/s up) with symmetric fibre (300 Mbit/s and more).
 */
export const HOME_UPLINK_MEDIAN_BPS = 30e6 / 8;
export const HOME_UPLINK_SIGMA = 1.0;

/**
 * Data-centre or colocation node uplink, bytes/s: log-normal, median 1 Gbit/s, σ = 0.5. ASSUMPTION: common
 * server ports are 1 and 10 Gbit/s, and a node shares its port with other tenants.
 */
export const DATACENTER_UPLINK_MEDIAN_BPS = 1e9 / 8;
export const DATACENTER_UPLINK_SIGMA = 0.5;

/** Packet loss rate on residential paths. ASSUMPTION (FCC MBA reports typical loss rates well below 1%). */
export const HOME_LOSS_RATE = 1e-4;
/** Packet loss rate on data-centre-to-data-centre paths. ASSUMPTION. */
export const DATACENTER_LOSS_RATE = 1e-5;

// ---------------------------------------------------------------------------------------------------------------
// TCP and HTTP
// ---------------------------------------------------------------------------------------------------------------

/** TCP maximum segment size on a 1500-byte MTU path: 1500 − 20 (IPv4) − 20 (TCP) − 12 (timestamps option). */
export const TCP_MSS_BYTES = 1448;

/** Initial congestion window, segments (RFC 6928, "Increasing TCP's Initial Window", 2013). */
export const TCP_INITIAL_WINDOW_SEGMENTS = 10;

/**
 * Largest window a default Linux sender keeps in flight: net.ipv4.tcp_wmem max = 4 MiB (Linux
 * Documentation/networking/ip-sysctl.rst; tcp_rmem max is 6 MiB, so the sender's buffer is the tighter bound).
 */
export const TCP_MAX_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * The constant in the Mathis formula, rate = (MSS / RTT) · C / sqrt(p), for periodic loss and an ACK per segment:
 * C = sqrt(3/2) ≈ 1.22 (Mathis, Semke, Mahdavi, Ott, "The Macroscopic Behavior of the TCP Congestion Avoidance
 * Algorithm", ACM CCR 27(3), 1997).
 */
export const MATHIS_C = Math.sqrt(3 / 2);

/** Minimum retransmission timeout, seconds (RFC 6298 recommends 1 s; Linux uses TCP_RTO_MIN = 200 ms). */
export const TCP_MIN_RTO_S = 0.2;

/** Round trips to open a TCP connection before data can be sent (three-way handshake, RFC 9293). */
export const TCP_HANDSHAKE_RTTS = 1;

/** Round trips of a full TLS 1.3 handshake (RFC 8446 §2). */
export const TLS13_HANDSHAKE_RTTS = 1;

/** Time an edge node takes to start answering a range request from its cache. ASSUMPTION: one NVMe read plus HTTP. */
export const EDGE_SERVER_TIME_S = 0.0002;

// ---------------------------------------------------------------------------------------------------------------
// HPC storage
// ---------------------------------------------------------------------------------------------------------------

/**
 * Local NVMe read bandwidth per GPU host, bytes/s: 4 U.2 drives (the NVIDIA DGX A100 datasheet lists 4 × 3.84 TB
 * NVMe for data), each about 7 GB/s sequential read on PCIe 4.0 (Samsung PM1733 and Solidigm D7-P5510 datasheets:
 * up to 7,000 MB/s). Striped: 4 × 7 = 28 GB/s, rounded down to 25 GB/s for RAID and filesystem overhead.
 */
export const NVME_HOST_READ_BPS = 25e9;

/** NVMe read latency per request, seconds: about 80-100 µs for a 4 KiB random read in the same datasheets. */
export const NVME_READ_LATENCY_S = 0.0001;

/** InfiniBand HDR link rate, bytes/s: 200 Gbit/s per port (NVIDIA ConnectX-6 and Quantum HDR datasheets). */
export const IB_HDR_LINK_BPS = 200e9 / 8;

/** One-way InfiniBand latency through NIC and switch, seconds: under 1 µs (ConnectX-6 datasheet: 0.6 µs). */
export const IB_LATENCY_S = 0.6e-6;

/**
 * Parallel-filesystem bandwidth one client host reaches, bytes/s. ASSUMPTION: half an HDR port (12.5 GB/s), a
 * common single-client Lustre figure for large sequential reads.
 */
export const PFS_PER_CLIENT_BPS = 12.5e9;

/**
 * Aggregate parallel-filesystem read bandwidth, bytes/s: two DDN AI400X2 appliances at about 90 GB/s read each
 * (DDN AI400X2 datasheet). An example mid-size system, not a ceiling: large centres have TB/s.
 */
export const PFS_AGGREGATE_BPS = 180e9;

/** Per-request latency of a parallel filesystem (metadata lookup plus read RPC). ASSUMPTION: 0.5 ms under load. */
export const PFS_REQUEST_LATENCY_S = 0.0005;

// ---------------------------------------------------------------------------------------------------------------
// GPUs and training
// ---------------------------------------------------------------------------------------------------------------

/**
 * Dense tensor-core peak, FLOP/s: A100 SXM 312 TFLOPS BF16 (NVIDIA A100 datasheet), H100 SXM 989 TFLOPS BF16
 * (H100 datasheet), V100 SXM2 125 TFLOPS FP16 (V100 datasheet; no BF16).
 */
export const GPU_PEAK_FLOPS: Record<string, number> = {
  A100: 312e12,
  H100: 989e12,
  V100: 125e12, // Tensor Core FP16 peak, NVIDIA V100 datasheet (SXM2)
};

/**
 * Model FLOPs utilization: achieved over peak. Chowdhery et al., "PaLM" (2022) report 46.2% for PaLM 540B;
 * 40% is a typical well-tuned large-scale figure. ASSUMPTION for the default.
 */
export const DEFAULT_MFU = 0.4;

/** GPU class the presets and the report use unless told otherwise: the current generation. */
export const DEFAULT_GPU_CLASS = 'H100';

/**
 * Bytes to store one token id: the smallest unsigned integer that holds every id of the vocabulary (uint16 up to
 * 65,536 ids, as GPT-2's 50,257 or Llama 2's 32,000; uint32 beyond, as Llama 3's 128,256).
 */
export function tokenBytes(vocabSize: number): number {
  return vocabSize <= 256 ? 1 : vocabSize <= 65_536 ? 2 : 4;
}

/**
 * Training FLOPs per parameter per token: about 6 (2 forward, 4 backward; Kaplan et al., "Scaling Laws for Neural
 * Language Models", 2020, C ≈ 6NT).
 */
export const TRAINING_FLOPS_PER_PARAM_PER_TOKEN = 6;

/**
 * Measured ResNet-50 training throughput, images/s per V100 in FP16 with TensorFlow: 2,940 images/s on a node of
 * 4 V100s (Dell EMC "Ready Solutions for AI: Deep Learning with NVIDIA" reference guide v1.0, Table 7), so 735 per
 * GPU. Used by the validation against that table's disk throughput; the job presets use RESNET50_IMAGES_PER_S.
 * The same table gives the dataset's mean image size: 1,448,283,629,516 bytes / 12,811,670 files.
 */
export const RESNET50_V100_IMAGES_PER_S = 2940 / 4;
export const IMAGENET_MEAN_IMAGE_BYTES = 1_448_283_629_516 / 12_811_670;

/**
 * ResNet-50 v1.5 training throughput per GPU, images/s, mixed precision, one code base for every class so that
 * the classes compare. V100 and A100: NVIDIA DeepLearningExamples, MxNet/Classification/RN50v1.5/README.md,
 * "Training performance" (mxnet-20.12-py3 NGC container, total images/s with data loading, 8 GPUs): DGX-1 8 × V100
 * 16 GB 10,723 images/s (1,340 per GPU), DGX A100 8 × A100 80 GB 16,925 images/s (2,116 per GPU). H100: no figure
 * from the same code; DERIVED as the A100 figure × 1.9, the mean per-accelerator speed-up of H100 over A100 across
 * the eight MLPerf Training v2.1 workloads (NVIDIA, reported by EE Times, "Nvidia Shows Off Hopper MLPerf Training
 * Benchmarks", Nov 2022). Likely low: NVIDIA's MLPerf Training v3.0 8 × H100 ResNet-50 run (3.0-2053, 13.5 min to
 * 75.9% top-1) implies more, so the H100 demand (and so the edge's difficulty) is if anything understated.
 */
export const RESNET50_IMAGES_PER_S: Record<string, number> = {
  V100: 10_723 / 8,
  A100: 16_925 / 8,
  H100: (16_925 / 8) * 1.9,
};

/** ImageNet-1k (ILSVRC 2012) training set: 1,281,167 images (Russakovsky et al., IJCV 2015). */
export const IMAGENET_TRAIN_IMAGES = 1_281_167;

// ---------------------------------------------------------------------------------------------------------------
// Prices (USD)
// ---------------------------------------------------------------------------------------------------------------

/** Cloud GPU-hour: AWS p4d.24xlarge on-demand, us-east-1, $32.77/h for 8 × A100 (AWS EC2 pricing, 2024). */
export const CLOUD_GPU_HOUR_USD = 32.7726 / 8;

/** Cloud egress to the internet: AWS data transfer out, first 10 TB/month tier, $0.09/GB (AWS EC2 pricing). */
export const CLOUD_EGRESS_USD_PER_GB = 0.09;

/** Edgeshard bandwidth at a token-subsidized price. ASSUMPTION: a scenario parameter, not a market price. */
export const TOKEN_BANDWIDTH_USD_PER_GB = 0.01;

// ---------------------------------------------------------------------------------------------------------------
// Churn
// ---------------------------------------------------------------------------------------------------------------

/**
 * Mean session length of a residential node, seconds. ASSUMPTION: 4 hours. Stutzbach and Rejaie, "Understanding
 * Churn in Peer-to-Peer Networks" (IMC 2006) measured median sessions of minutes to an hour for unpaid file-sharing
 * peers; nodes paid to stay online should stay longer, so sweep this.
 */
export const HOME_MEAN_SESSION_S = 4 * 3600;

/** Time a client waits on a stalled transfer before failing over to another node. ASSUMPTION: 2 s read timeout. */
export const FAILOVER_TIMEOUT_S = 2;

// ---------------------------------------------------------------------------------------------------------------
// Data loader
// ---------------------------------------------------------------------------------------------------------------

/**
 * Host memory the data loaders of one GPU host may hold (prefetched batches and shards in flight), bytes: 256 GiB.
 * ASSUMPTION: an eighth of a DGX H100's 2 TB of system memory (NVIDIA DGX H100 datasheet), leaving the rest to the
 * framework, pinned transfer buffers and the page cache. The loader search (loader-search.ts) stays within it.
 */
export const LOADER_HOST_MEMORY_BUDGET_BYTES = 256 * 1024 ** 3;

// ---------------------------------------------------------------------------------------------------------------
// Compute at several sites: gradient synchronisation
// ---------------------------------------------------------------------------------------------------------------

/**
 * Scale-out bandwidth per GPU inside a site, bytes/s: 400 Gbit/s, one ConnectX-7 NDR InfiniBand port per GPU
 * (NVIDIA DGX H100 datasheet: 8 × single-port ConnectX-7, 400 Gb/s each).
 */
export const SITE_FABRIC_PER_GPU_BPS = 400e9 / 8;

/**
 * Wide-area capacity of one GPU site towards the others, bytes/s: 100 Gbit/s. ASSUMPTION: one leased 100G
 * wavelength or cloud interconnect port per site; sweep compute.wan.rate.
 */
export const SITE_WAN_BPS = 100e9 / 8;

/**
 * Parallel TCP streams per site-to-site hop: 64, the most NCCL's socket transport opens per connection (NCCL
 * environment variables: NCCL_SOCKET_NTHREADS × NCCL_NSOCKS_PERTHREAD must not exceed 64).
 */
export const WAN_STREAMS = 64;

/**
 * Largest TCP window per WAN stream, bytes: 64 MiB, the socket-buffer maximum ESnet's fasterdata "Linux Tuning"
 * page recommends for hosts on long, fast paths (net.ipv4.tcp_rmem / tcp_wmem max 67108864).
 */
export const WAN_MAX_WINDOW_BYTES = 64 * 1024 * 1024;

/**
 * Share of a training step's compute that is the backward pass, during which gradient buckets can already be
 * reduced (PyTorch DDP's overlap): 4 of 6 FLOPs per parameter per token (Kaplan et al. 2020).
 */
export const BACKWARD_SHARE_OF_COMPUTE = 4 / 6;

/** Bytes per gradient value in mixed-precision training (BF16 gradients, as Megatron-LM and PyTorch AMP keep them). */
export const GRADIENT_BYTES_PER_PARAM = 2;

/** Bytes per pseudo-gradient value in a DiLoCo outer step (FP32, as the outer optimizer keeps them). */
export const OUTER_GRADIENT_BYTES_PER_PARAM = 4;

/** Inner steps between DiLoCo outer syncs: H = 500 (Douillard et al., "DiLoCo", 2023, main experiments). */
export const DILOCO_INNER_STEPS = 500;

/**
 * Training memory per parameter with mixed-precision Adam, bytes: 16 (BF16 weights and gradients, FP32 master
 * weights and two Adam moments; Rajbhandari et al., "ZeRO", SC 2020). With GPU_MEMORY_BYTES it sets how many GPUs
 * one model replica spans by default, which divides each GPU's share of the gradient.
 */
export const TRAINING_BYTES_PER_PARAM = 16;
export const GPU_MEMORY_BYTES = 80e9; // A100 80 GB and H100 SXM 80 GB datasheets
