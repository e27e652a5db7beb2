/*
 * fake_nvml.c - a scriptable stand-in for libnvidia-ml.so.1, for tests only.
 *
 * It exports the small subset of the NVML C API that spank-carbon reaches
 * through the Rust crate nvml-wrapper 0.13 / nvml-wrapper-sys 0.10, and serves
 * GPUs described by a plain-text config file (format: see README.md and
 * parse_config() below).  Energy counters are the exact closed-form integral
 * of the scripted power curve, evaluated against CLOCK_REALTIME, so a test can
 * compute the expected energy of any time window independently.
 *
 * No NVIDIA header is used: the few types needed are re-declared here with
 * the layouts nvml-wrapper-sys 0.10 (bindgen of nvml.h) uses.
 *
 * Only the NVML entry points are exported; every helper is static.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* NVML types and constants (same values/layouts as nvml.h)                 */
/* ------------------------------------------------------------------------ */

typedef int nvmlReturn_t; /* C enum nvmlReturn_enum: int-sized */

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_UNKNOWN 999

#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16
#define NVML_DEVICE_NAME_V2_BUFFER_SIZE 96
#define NVML_DEVICE_UUID_V2_BUFFER_SIZE 96

#define NVML_DEVICE_ARCH_VOLTA 5
#define NVML_DEVICE_ARCH_TURING 6
#define NVML_DEVICE_ARCH_AMPERE 7
#define NVML_DEVICE_ARCH_ADA 8
#define NVML_DEVICE_ARCH_HOPPER 9
#define NVML_DEVICE_ARCH_BLACKWELL 10

/* Field ids (nvml.h) and nvmlValueType_t. */
#define NVML_FI_DEV_POWER_AVERAGE 185
#define NVML_FI_DEV_POWER_INSTANT 186
#define NVML_VALUE_TYPE_UNSIGNED_INT 1

/* MIG: at most 7 MIG devices (compute instances) under a board here; NVML's
 * nvmlDeviceGetMaxMigDeviceCount is 7 on A100/H100. */
#define NVML_MAX_MIG_DEVICES 7
#define NVML_DEVICE_MIG_DISABLE 0
#define NVML_DEVICE_MIG_ENABLE 1

/* nvmlPciInfo_t as used by nvmlDeviceGetPciInfo_v3 (nvmlPciInfo_st). */
typedef struct nvmlPciInfo_st {
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE]; /* "%04X:%02X:%02X.0" */
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;    /* device id << 16 | vendor id */
    unsigned int pciSubSystemId;
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE]; /* "%08X:%02X:%02X.0" */
} nvmlPciInfo_t;

/* nvmlDeviceAttributes_t (nvmlDeviceGetAttributes_v2). */
typedef struct nvmlDeviceAttributes_st {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount;
    unsigned int sharedDecoderCount;
    unsigned int sharedEncoderCount;
    unsigned int sharedJpegCount;
    unsigned int sharedOfaCount;
    unsigned int gpuInstanceSliceCount;
    unsigned int computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

/* nvmlGpuInstanceProfileInfo_t (v1, nvmlDeviceGetGpuInstanceProfileInfo). */
typedef struct nvmlGpuInstanceProfileInfo_st {
    unsigned int id;
    unsigned int isP2pSupported;
    unsigned int sliceCount;
    unsigned int instanceCount;
    unsigned int multiprocessorCount;
    unsigned int copyEngineCount;
    unsigned int decoderCount;
    unsigned int encoderCount;
    unsigned int jpegCount;
    unsigned int ofaCount;
    unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;

/* NVML_GPU_INSTANCE_PROFILE_{1,2,3,4,7}_SLICE are 0..4. */
#define FAKE_GI_PROFILES 5

/* nvmlValue_t and nvmlFieldValue_t (nvmlDeviceGetFieldValues). */
typedef union nvmlValue_st {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct nvmlFieldValue_st {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;   /* unix microseconds */
    long long latencyUsec;
    int valueType;         /* nvmlValueType_t */
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

/* The handle type is an opaque pointer in nvml.h; we define the struct. */
typedef struct nvmlDevice_st *nvmlDevice_t;

/*
 * The complete exported API.  nvml-wrapper-sys resolves every symbol lazily
 * with dlsym, so anything not listed here only fails if it is called (as
 * NvmlError::FailedToLoadSymbol, or a panic for nvmlShutdown in Drop).
 */
nvmlReturn_t nvmlInit_v2(void);
nvmlReturn_t nvmlInitWithFlags(unsigned int flags);
nvmlReturn_t nvmlShutdown(void);
const char *nvmlErrorString(nvmlReturn_t result);
nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length);
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length);
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion);
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion);
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount);
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index);
nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber);
nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length);
nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length);
nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci);
nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                  unsigned int *pendingMode);
nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch);
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power);
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                 unsigned long long *energy);
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                      nvmlFieldValue_t *values);
nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device,
                                        nvmlDeviceAttributes_t *attributes);
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count);
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice);
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice);
nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                          nvmlDevice_t *device);
nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id);
nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id);
nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                 nvmlGpuInstanceProfileInfo_t *info);

/* ------------------------------------------------------------------------ */
/* Internal model                                                           */
/* ------------------------------------------------------------------------ */

#define FAKE_MAX_DEVICES 64
#define FAKE_MAX_MIGS (FAKE_MAX_DEVICES * NVML_MAX_MIG_DEVICES)
#define FAKE_FIELD_AVG 1 /* NVML_FI_DEV_POWER_AVERAGE answered */
#define FAKE_FIELD_INST 2 /* NVML_FI_DEV_POWER_INSTANT answered */
#define FAKE_DEV_MAGIC 0xFA4E6B0Du
#define FAKE_MAX_CONFIG_BYTES (1u << 20)
#define FAKE_MAX_TOKENS 32 /* words per config line */
#define FAKE_WS " \t\r\v\f"
#define NS_PER_S 1000000000LL

/* 128-bit arithmetic keeps mW * ns products exact (GCC/Clang extension). */
__extension__ typedef __int128 i128;

struct fake_snapshot;

/* One simulated GPU.  Immutable once published. */
struct nvmlDevice_st {
    uint32_t magic;                    /* FAKE_DEV_MAGIC; cheap handle check */
    const struct fake_snapshot *snap;  /* owning config snapshot */
    unsigned int index;                /* NVML index (position by PCI bus) */
    unsigned int minor;                /* /dev/nvidia<minor> */
    unsigned int pci_bus;
    unsigned int power_mw;             /* constant power / low half of square */
    unsigned int hi_mw;                /* high half of square wave */
    int64_t period_ns;                 /* square-wave period; 0 = constant */
    int has_counter;                   /* 0: energy counter NOT_SUPPORTED */
    int has_reset;
    int64_t reset_ns;                  /* driver reload time (unix ns) */
    int mig;
    int fail_power;
    int fail_energy;
    int hang_energy;                   /* energy reads never return (wedged driver) */
    unsigned int arch;
    unsigned int sm_count;             /* multiprocessorCount */
    unsigned int mig_sm;               /* SMs of the 7-slice GPU instance profile */
    int board_attrs;                   /* 0: attributes NOT_SUPPORTED on the board */
    int fields;                        /* FAKE_FIELD_* bits; -1 while unset */
    int is_mig;                        /* a MIG device (compute instance) handle */
    unsigned int gi, ci;               /* MIG: GPU and compute instance ids */
    unsigned int parent;               /* MIG: index of the board in snap->devs */
    unsigned int mig_first, mig_count; /* board: its MIG devices in snap->devs */
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
};

/*
 * Result of one successful init: the parsed config as seen by this node.
 * Snapshots are never freed, so a device handle stays valid for the life of
 * the process even if a later init loads a different config.  To bound that
 * leak, an init whose config text and node name equal the current snapshot's
 * reuses it; memory therefore only grows with the number of distinct configs.
 */
struct fake_snapshot {
    char *text;          /* raw config text (for the reuse check) */
    char *node;          /* SLURMD_NODENAME at init, or "default" */
    char *log_path;      /* NULL: no logging */
    int64_t epoch_ns;    /* "driver load" time */
    unsigned int count;  /* boards: devs[0..count), by PCI bus */
    unsigned int total;  /* boards then MIG devices: devs[count..total) */
    struct nvmlDevice_st devs[];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* init/shutdown */
static _Atomic(const struct fake_snapshot *) g_current;
static atomic_int g_refcount;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

__attribute__((format(printf, 1, 2)))
static void diag(const char *fmt, ...)
{
    va_list ap;
    char buf[1024];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    fprintf(stderr, "fake-nvml: %s\n", buf);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/*
 * Parse "<seconds>[.<fraction>]" into unix nanoseconds exactly (fraction
 * digits past the 9th are truncated).  Anything else that strtold accepts
 * (e.g. "1.7e9") is converted via long double.  Returns 0 on success.
 */
static int parse_time_ns(const char *s, int64_t *out)
{
    const char *p = s;
    int64_t sec = 0, frac = 0;
    int frac_digits = 0;

    if (*p >= '0' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            sec = sec * 10 + (*p++ - '0');
            if (sec >= INT64_MAX / NS_PER_S) /* keep sec * 1e9 + frac in range */
                return -1;
        }
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9') {
                if (frac_digits < 9) {
                    frac = frac * 10 + (*p - '0');
                    frac_digits++;
                }
                p++;
            }
        }
        if (*p == '\0') {
            while (frac_digits < 9) {
                frac *= 10;
                frac_digits++;
            }
            *out = sec * NS_PER_S + frac;
            return 0;
        }
    }

    /* Fallback: exponent notation and the like. */
    {
        char *end;
        long double v;

        errno = 0;
        v = strtold(s, &end);
        if (errno != 0 || end == s || *end != '\0' || !isfinite(v) ||
            v < 0.0L || v > (long double)(INT64_MAX / NS_PER_S))
            return -1;
        *out = (int64_t)(v * 1e9L + 0.5L);
        return 0;
    }
}

/* Parse an unsigned 32-bit integer in the given base; 0 on success. */
static int parse_u32(const char *s, int base, unsigned int *out)
{
    char *end;
    unsigned long v;

    if (*s == '\0' || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    v = strtoul(s, &end, base);
    if (errno != 0 || *end != '\0' || v > UINT_MAX)
        return -1;
    *out = (unsigned int)v;
    return 0;
}

/* Copy a NUL-terminated string into a caller buffer, NVML style. */
static nvmlReturn_t copy_out(char *dst, unsigned int length, const char *src)
{
    size_t need = strlen(src) + 1;

    if (dst == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (length < need)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, need);
    return NVML_SUCCESS;
}

/* Read a whole file into a NUL-terminated malloc'd buffer, or NULL. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf;
    size_t n;

    if (f == NULL)
        return NULL;
    buf = malloc(FAKE_MAX_CONFIG_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, FAKE_MAX_CONFIG_BYTES, f);
    if (ferror(f) || !feof(f)) { /* read error, or file too large */
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/*
 * Config location: $FAKE_NVML_CONFIG if set and non-empty, else
 * "fake-nvml.conf" next to this shared object (found with dladdr).
 * Returns a malloc'd path or NULL.
 */
static char *config_path(void)
{
    const char *env = getenv("FAKE_NVML_CONFIG");
    Dl_info info;
    const char *slash;
    char *path;
    size_t dirlen;

    if (env != NULL && *env != '\0')
        return strdup(env);

    /* Any address inside this object works; use one of our functions. */
    if (dladdr((const void *)(uintptr_t)&config_path, &info) == 0 ||
        info.dli_fname == NULL)
        return NULL;
    slash = strrchr(info.dli_fname, '/');
    dirlen = slash ? (size_t)(slash - info.dli_fname) + 1 : 0;
    path = malloc(dirlen + sizeof "fake-nvml.conf");
    if (path == NULL)
        return NULL;
    memcpy(path, info.dli_fname, dirlen);
    memcpy(path + dirlen, "fake-nvml.conf", sizeof "fake-nvml.conf");
    return path;
}

/* ------------------------------------------------------------------------ */
/* Config parsing                                                           */
/* ------------------------------------------------------------------------ */

static int cmp_dev_bus(const void *a, const void *b)
{
    const struct nvmlDevice_st *x = a, *y = b;

    return (x->pci_bus > y->pci_bus) - (x->pci_bus < y->pci_bus);
}

/* A typical SM count per architecture, for boards without sm=. */
static unsigned int default_sm(unsigned int arch)
{
    switch (arch) {
    case NVML_DEVICE_ARCH_VOLTA: return 80;      /* V100 */
    case NVML_DEVICE_ARCH_TURING: return 40;     /* T4 */
    case NVML_DEVICE_ARCH_AMPERE: return 108;    /* A100 */
    case NVML_DEVICE_ARCH_ADA: return 142;       /* L40 */
    case NVML_DEVICE_ARCH_HOPPER: return 132;    /* H100 SXM */
    case NVML_DEVICE_ARCH_BLACKWELL: return 148; /* B200 */
    default: return 56;                          /* P100 and older */
    }
}

/* Parse one "key=value" option of a gpu line into dev; 0 on success. */
static int parse_gpu_option(struct nvmlDevice_st *dev, char *opt,
                            const char *path, int lineno)
{
    char *val = strchr(opt, '=');

    if (val == NULL) {
        diag("%s:%d: option '%s' is not key=value", path, lineno, opt);
        return -1;
    }
    *val++ = '\0';

    if (strcmp(opt, "counter") == 0) {
        if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0)
            goto bad;
        dev->has_counter = (val[0] == '1');
    } else if (strcmp(opt, "mig") == 0) {
        if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0)
            goto bad;
        dev->mig = (val[0] == '1');
    } else if (strcmp(opt, "reset_at") == 0) {
        if (parse_time_ns(val, &dev->reset_ns) != 0)
            goto bad;
        dev->has_reset = 1;
    } else if (strcmp(opt, "square") == 0) {
        char *colon = strchr(val, ':');
        unsigned int period_ms;

        if (colon == NULL)
            goto bad;
        *colon = '\0';
        if (parse_u32(val, 10, &dev->hi_mw) != 0 ||
            parse_u32(colon + 1, 10, &period_ms) != 0 || period_ms == 0) {
            *colon = ':';
            goto bad;
        }
        *colon = ':';
        dev->period_ns = (int64_t)period_ms * 1000000;
    } else if (strcmp(opt, "name") == 0) {
        if (strlen(val) >= sizeof dev->name)
            goto bad;
        strcpy(dev->name, val);
    } else if (strcmp(opt, "uuid") == 0) {
        if (*val == '\0' || strlen(val) >= sizeof dev->uuid)
            goto bad;
        strcpy(dev->uuid, val);
    } else if (strcmp(opt, "fail") == 0) {
        if (strcmp(val, "power") == 0) {
            dev->fail_power = 1;
        } else if (strcmp(val, "energy") == 0) {
            dev->fail_energy = 1;
        } else if (strcmp(val, "all") == 0) {
            dev->fail_power = dev->fail_energy = 1;
        } else {
            goto bad;
        }
    } else if (strcmp(opt, "hang") == 0) {
        if (strcmp(val, "energy") != 0)
            goto bad;
        dev->hang_energy = 1;
    } else if (strcmp(opt, "arch") == 0) {
        if (parse_u32(val, 10, &dev->arch) != 0)
            goto bad;
    } else if (strcmp(opt, "sm") == 0) {
        if (parse_u32(val, 10, &dev->sm_count) != 0 || dev->sm_count == 0)
            goto bad;
    } else if (strcmp(opt, "mig_sm") == 0) {
        if (parse_u32(val, 10, &dev->mig_sm) != 0 || dev->mig_sm == 0)
            goto bad;
    } else if (strcmp(opt, "board_attrs") == 0) {
        if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0)
            goto bad;
        dev->board_attrs = (val[0] == '1');
    } else if (strcmp(opt, "fields") == 0) {
        if (strcmp(val, "avg,inst") == 0 || strcmp(val, "inst,avg") == 0)
            dev->fields = FAKE_FIELD_AVG | FAKE_FIELD_INST;
        else if (strcmp(val, "avg") == 0)
            dev->fields = FAKE_FIELD_AVG;
        else if (strcmp(val, "inst") == 0)
            dev->fields = FAKE_FIELD_INST;
        else if (strcmp(val, "none") == 0)
            dev->fields = 0;
        else
            goto bad;
    } else {
        diag("%s:%d: unknown gpu option '%s'", path, lineno, opt);
        return -1;
    }
    return 0;

bad:
    diag("%s:%d: bad value '%s' for gpu option '%s'", path, lineno, val, opt);
    return -1;
}

/*
 * Build a snapshot from config text for the given node.  Returns NULL (after
 * printing a diagnostic to stderr) on any syntax or consistency error.
 *
 *   epoch <unix_seconds>
 *   log <path>
 *   gpu <node|*> <minor> <pci_bus_hex> <power_mw> [key=value ...]
 *   mig <node|*> <board_minor> <gi> <ci> <sm_count> [uuid=...]
 */
static struct fake_snapshot *parse_config(const char *text, const char *node,
                                          const char *path)
{
    struct nvmlDevice_st devs[FAKE_MAX_DEVICES];
    struct nvmlDevice_st *migs = calloc(FAKE_MAX_MIGS, sizeof *migs);
    int mig_line[FAKE_MAX_MIGS];
    unsigned int count = 0, nmig = 0, total;
    int64_t epoch_ns = 0;
    int have_epoch = 0;
    char *log_path = NULL;
    char *work = strdup(text);
    char *line, *save_line = NULL;
    int lineno = 0;
    struct fake_snapshot *snap = NULL;
    unsigned int i, j;

    if (work == NULL || migs == NULL) {
        free(work);
        free(migs);
        return NULL;
    }

    /* Split by hand on '\n' (strtok_r would skip empty lines, and we want
     * accurate line numbers in diagnostics). */
    for (line = work; line != NULL; line = save_line) {
        char *tok[FAKE_MAX_TOKENS], *save_tok = NULL, *hash, *t;
        int ntok = 0;

        save_line = strchr(line, '\n');
        if (save_line != NULL)
            *save_line++ = '\0';
        lineno++;

        hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';

        for (t = strtok_r(line, FAKE_WS, &save_tok); t != NULL;
             t = strtok_r(NULL, FAKE_WS, &save_tok)) {
            if (ntok == FAKE_MAX_TOKENS) {
                diag("%s:%d: too many words", path, lineno);
                goto fail;
            }
            tok[ntok++] = t;
        }
        if (ntok == 0)
            continue;

        if (strcmp(tok[0], "epoch") == 0) {
            if (ntok != 2 || parse_time_ns(tok[1], &epoch_ns) != 0) {
                diag("%s:%d: expected 'epoch <unix_seconds>'", path, lineno);
                goto fail;
            }
            have_epoch = 1;
        } else if (strcmp(tok[0], "log") == 0) {
            if (ntok != 2) {
                diag("%s:%d: expected 'log <path>'", path, lineno);
                goto fail;
            }
            free(log_path);
            log_path = strdup(tok[1]);
            if (log_path == NULL)
                goto fail;
        } else if (strcmp(tok[0], "gpu") == 0) {
            struct nvmlDevice_st dev;
            int k;

            if (ntok < 5) {
                diag("%s:%d: expected 'gpu <node> <minor> <pci_bus_hex> "
                     "<power_mw> [options]'", path, lineno);
                goto fail;
            }
            memset(&dev, 0, sizeof dev);
            dev.magic = FAKE_DEV_MAGIC;
            dev.has_counter = 1;
            dev.arch = NVML_DEVICE_ARCH_HOPPER;
            dev.board_attrs = 1;
            dev.fields = -1;
            if (parse_u32(tok[2], 10, &dev.minor) != 0 ||
                parse_u32(tok[3], 16, &dev.pci_bus) != 0 || dev.pci_bus > 0xff ||
                parse_u32(tok[4], 10, &dev.power_mw) != 0) {
                diag("%s:%d: bad minor, pci bus or power on gpu line", path,
                     lineno);
                goto fail;
            }
            for (k = 5; k < ntok; k++)
                if (parse_gpu_option(&dev, tok[k], path, lineno) != 0)
                    goto fail;

            /* Only this node's GPUs (and "*" ones) are visible. */
            if (strcmp(tok[1], "*") != 0 && strcmp(tok[1], node) != 0)
                continue;
            if (count == FAKE_MAX_DEVICES) {
                diag("%s:%d: more than %d GPUs on node %s", path, lineno,
                     FAKE_MAX_DEVICES, node);
                goto fail;
            }
            if (dev.name[0] == '\0')
                snprintf(dev.name, sizeof dev.name, "Fake NVIDIA GPU");
            if (dev.uuid[0] == '\0')
                snprintf(dev.uuid, sizeof dev.uuid, "GPU-fake-%s-%u", node,
                         dev.minor);
            if (dev.sm_count == 0)
                dev.sm_count = default_sm(dev.arch);
            if (dev.mig_sm == 0)
                dev.mig_sm = dev.sm_count;
            if (dev.mig_sm > dev.sm_count) {
                diag("%s:%d: mig_sm %u is more than the GPU's %u SMs", path,
                     lineno, dev.mig_sm, dev.sm_count);
                goto fail;
            }
            if (dev.fields < 0) /* NVML's power fields: Hopper and newer */
                dev.fields = dev.arch >= NVML_DEVICE_ARCH_HOPPER
                                 ? FAKE_FIELD_AVG | FAKE_FIELD_INST
                                 : 0;
            devs[count++] = dev;
        } else if (strcmp(tok[0], "mig") == 0) {
            /* mig <node|*> <board_minor> <gi> <ci> <sm_count> [uuid=...] */
            struct nvmlDevice_st m;
            int k;

            if (ntok < 6) {
                diag("%s:%d: expected 'mig <node> <board_minor> <gi> <ci> "
                     "<sm_count> [uuid=MIG-...]'", path, lineno);
                goto fail;
            }
            memset(&m, 0, sizeof m);
            m.magic = FAKE_DEV_MAGIC;
            m.is_mig = 1;
            if (parse_u32(tok[2], 10, &m.minor) != 0 ||
                parse_u32(tok[3], 10, &m.gi) != 0 ||
                parse_u32(tok[4], 10, &m.ci) != 0 ||
                parse_u32(tok[5], 10, &m.sm_count) != 0 || m.sm_count == 0) {
                diag("%s:%d: bad board minor, gi, ci or sm count on mig line",
                     path, lineno);
                goto fail;
            }
            for (k = 6; k < ntok; k++) {
                if (strncmp(tok[k], "uuid=", 5) == 0 && tok[k][5] != '\0' &&
                    strlen(tok[k] + 5) < sizeof m.uuid) {
                    strcpy(m.uuid, tok[k] + 5);
                } else {
                    diag("%s:%d: unknown or bad mig option '%s'", path, lineno,
                         tok[k]);
                    goto fail;
                }
            }
            if (strcmp(tok[1], "*") != 0 && strcmp(tok[1], node) != 0)
                continue;
            if (nmig == FAKE_MAX_MIGS) {
                diag("%s:%d: too many mig lines", path, lineno);
                goto fail;
            }
            if (m.uuid[0] == '\0')
                snprintf(m.uuid, sizeof m.uuid, "MIG-fake-%s-%u-%u-%u", node,
                         m.minor, m.gi, m.ci);
            mig_line[nmig] = lineno;
            migs[nmig++] = m;
        } else {
            diag("%s:%d: unknown directive '%s'", path, lineno, tok[0]);
            goto fail;
        }
    }

    if (!have_epoch) {
        diag("%s: missing required 'epoch' line", path);
        goto fail;
    }

    /* NVML enumerates by PCI bus; minors/buses/uuids must be unique. */
    qsort(devs, count, sizeof devs[0], cmp_dev_bus);
    for (i = 0; i < count; i++) {
        for (j = i + 1; j < count; j++) {
            if (devs[i].pci_bus == devs[j].pci_bus ||
                devs[i].minor == devs[j].minor ||
                strcmp(devs[i].uuid, devs[j].uuid) == 0) {
                diag("%s: node %s: GPUs minor %u and minor %u share a minor, "
                     "PCI bus or uuid", path, node, devs[i].minor,
                     devs[j].minor);
                goto fail;
            }
        }
    }

    /* Each MIG device goes under its board (by minor, on this node), which
     * must have mig=1; at most 7 per board, (gi, ci) unique on a board, and
     * their SMs together no more than the board's. */
    for (j = 0; j < nmig; j++) {
        unsigned int sum = 0, n = 0, k;

        for (i = 0; i < count && devs[i].minor != migs[j].minor; i++)
            ;
        if (i == count) {
            diag("%s:%d: mig: no gpu with minor %u on node %s", path,
                 mig_line[j], migs[j].minor, node);
            goto fail;
        }
        if (!devs[i].mig) {
            diag("%s:%d: mig: gpu minor %u does not have mig=1", path,
                 mig_line[j], migs[j].minor);
            goto fail;
        }
        migs[j].parent = i;
        for (k = 0; k <= j; k++) {
            if (migs[k].minor != migs[j].minor)
                continue;
            n++;
            sum += migs[k].sm_count;
            if (k < j && migs[k].gi == migs[j].gi && migs[k].ci == migs[j].ci) {
                diag("%s:%d: mig: gpu minor %u already has gi %u ci %u", path,
                     mig_line[j], migs[j].minor, migs[j].gi, migs[j].ci);
                goto fail;
            }
        }
        if (n > NVML_MAX_MIG_DEVICES) {
            diag("%s:%d: mig: more than %d MIG devices on gpu minor %u", path,
                 mig_line[j], NVML_MAX_MIG_DEVICES, migs[j].minor);
            goto fail;
        }
        if (sum > devs[i].mig_sm) {
            diag("%s:%d: mig: the MIG devices of gpu minor %u have %u SMs, "
                 "more than the board's %u", path, mig_line[j], migs[j].minor,
                 sum, devs[i].mig_sm);
            goto fail;
        }
        for (k = 0; k < count; k++) {
            if (strcmp(devs[k].uuid, migs[j].uuid) == 0) {
                diag("%s:%d: mig: uuid %s is a gpu's", path, mig_line[j],
                     migs[j].uuid);
                goto fail;
            }
        }
        for (k = 0; k < j; k++) {
            if (strcmp(migs[k].uuid, migs[j].uuid) == 0) {
                diag("%s:%d: mig: uuid %s used twice", path, mig_line[j],
                     migs[j].uuid);
                goto fail;
            }
        }
    }

    total = count + nmig;
    snap = calloc(1, sizeof *snap + total * sizeof snap->devs[0]);
    if (snap == NULL)
        goto fail;
    snap->text = strdup(text);
    snap->node = strdup(node);
    if (snap->text == NULL || snap->node == NULL)
        goto fail;
    snap->log_path = log_path;
    log_path = NULL;
    snap->epoch_ns = epoch_ns;
    snap->count = count;
    snap->total = total;
    for (i = 0; i < count; i++) {
        snap->devs[i] = devs[i];
        snap->devs[i].index = i;
        snap->devs[i].snap = snap;
        snap->devs[i].mig_first = count;
        snap->devs[i].mig_count = 0;
    }
    /* MIG devices grouped by board, in config order within a board. */
    total = count;
    for (i = 0; i < count; i++) {
        snap->devs[i].mig_first = total;
        for (j = 0; j < nmig; j++) {
            struct nvmlDevice_st *m;

            if (migs[j].parent != i)
                continue;
            m = &snap->devs[total++];
            *m = migs[j];
            m->snap = snap;
            m->index = snap->devs[i].mig_count++;
            m->arch = devs[i].arch;
            snprintf(m->name, sizeof m->name, "%.60s MIG %usm", devs[i].name,
                     m->sm_count);
        }
    }
    free(migs);
    free(work);
    return snap;

fail:
    if (snap != NULL) {
        free(snap->text);
        free(snap->node);
        free(snap);
    }
    free(log_path);
    free(migs);
    free(work);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Power model                                                              */
/* ------------------------------------------------------------------------ */

/* Scripted power (mW) at absolute time t (unix ns). */
static unsigned int power_at(const struct nvmlDevice_st *d, int64_t t)
{
    int64_t rel = t - d->snap->epoch_ns;

    if (d->period_ns == 0 || rel < 0)
        return d->power_mw;
    return (rel % d->period_ns) < d->period_ns / 2 ? d->power_mw : d->hi_mw;
}

/*
 * Closed-form integral of the power curve from epoch to epoch + rel
 * (rel >= 0), in mW*ns.  128-bit so nothing can overflow.
 */
static i128 energy_from_epoch(const struct nvmlDevice_st *d, int64_t rel)
{
    i128 lo = d->power_mw, hi = d->hi_mw;
    int64_t half, full, rem;

    if (d->period_ns == 0)
        return lo * rel;
    half = d->period_ns / 2; /* period_ns is a multiple of 1e6: exact */
    full = rel / d->period_ns;
    rem = rel % d->period_ns;
    return (i128)full * (lo + hi) * half +
           (rem <= half ? lo * rem : lo * half + hi * (rem - half));
}

/*
 * Energy counter (mJ) at absolute time t: integral of power since the
 * later of epoch and reset_at (the latter only once t >= reset_at).
 * Truncated (floor) to whole millijoules, like a real counter.
 */
static unsigned long long energy_at(const struct nvmlDevice_st *d, int64_t t)
{
    int64_t epoch = d->snap->epoch_ns;
    int64_t start = epoch;
    i128 mw_ns;

    if (d->has_reset && t >= d->reset_ns && d->reset_ns > epoch)
        start = d->reset_ns;
    if (t <= start)
        return 0;
    mw_ns = energy_from_epoch(d, t - epoch) - energy_from_epoch(d, start - epoch);
    return (unsigned long long)(mw_ns / NS_PER_S); /* mW*ns -> mJ */
}

/*
 * Append "<unix_ns> <node> <job> <pid> <minor> <kind> <value>\n" to the
 * configured log with a single O_APPEND write, so lines from concurrent
 * processes never interleave.  Errors are ignored.
 */
static void log_read(const struct nvmlDevice_st *d, int64_t t, const char *kind,
                     unsigned long long value)
{
    const char *path = d->snap->log_path;
    const char *job;
    char line[512];
    int n, fd;

    if (path == NULL)
        return;
    job = getenv("SLURM_JOB_ID");
    if (job == NULL || *job == '\0')
        job = "-";
    n = snprintf(line, sizeof line, "%" PRId64 " %s %s %ld %u %s %llu\n", t,
                 d->snap->node, job, (long)getpid(), d->minor, kind, value);
    if (n < 0 || (size_t)n >= sizeof line)
        return;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) != n) {
        /* nothing sensible to do; tests will notice the missing line */
    }
    close(fd);
}

/* ------------------------------------------------------------------------ */
/* Exported NVML API                                                        */
/* ------------------------------------------------------------------------ */

static const char *const k_driver_version = "999.99-fake";
static const char *const k_nvml_version = "12.999.99-fake";

/* Current snapshot, or NULL when NVML is not initialized. */
static const struct fake_snapshot *current(void)
{
    if (atomic_load(&g_refcount) <= 0)
        return NULL;
    return atomic_load(&g_current);
}

/* Validate a device handle; on success *out is the device. */
static nvmlReturn_t get_dev(nvmlDevice_t device, const struct nvmlDevice_st **out)
{
    if (atomic_load(&g_refcount) <= 0)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || device->magic != FAKE_DEV_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    *out = device;
    return NVML_SUCCESS;
}

/* Like get_dev, but a MIG device handle gets NOT_SUPPORTED: NVML answers
 * power, energy and the like only for the whole board. */
static nvmlReturn_t get_board(nvmlDevice_t device, const struct nvmlDevice_st **out)
{
    nvmlReturn_t r = get_dev(device, out);

    if (r == NVML_SUCCESS && (*out)->is_mig)
        return NVML_ERROR_NOT_SUPPORTED;
    return r;
}

/* Shared body of nvmlInit_v2 / nvmlInitWithFlags: (re)load the config. */
static nvmlReturn_t fake_init(void)
{
    const struct fake_snapshot *cur;
    struct fake_snapshot *snap;
    const char *node;
    char *path, *text;
    nvmlReturn_t ret = NVML_SUCCESS;

    pthread_mutex_lock(&g_lock);

    path = config_path();
    text = path ? read_file(path) : NULL;
    if (text == NULL) {
        ret = NVML_ERROR_DRIVER_NOT_LOADED;
        goto out;
    }

    node = getenv("SLURMD_NODENAME");
    if (node == NULL || *node == '\0')
        node = "default";

    cur = atomic_load(&g_current);
    if (cur == NULL || strcmp(cur->text, text) != 0 || strcmp(cur->node, node) != 0) {
        snap = parse_config(text, node, path);
        if (snap == NULL) {
            ret = NVML_ERROR_UNKNOWN;
            goto out;
        }
        /* The old snapshot is intentionally leaked; see struct comment. */
        atomic_store(&g_current, snap);
    }
    atomic_fetch_add(&g_refcount, 1);

out:
    free(text);
    free(path);
    pthread_mutex_unlock(&g_lock);
    return ret;
}

nvmlReturn_t nvmlInit_v2(void)
{
    return fake_init();
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags; /* NO_GPUS / NO_ATTACH make no difference here */
    return fake_init();
}

nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t ret = NVML_SUCCESS;

    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_refcount) <= 0)
        ret = NVML_ERROR_UNINITIALIZED;
    else
        atomic_fetch_sub(&g_refcount, 1);
    pthread_mutex_unlock(&g_lock);
    return ret;
}

const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 5: return "Already Initialized";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 8: return "Insufficient External Power";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 11: return "Interrupt Request Issue";
    case 12: return "NVML Shared Library Not Found";
    case 13: return "Function Not Found";
    case 14: return "Corrupted infoROM";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    case 17: return "The operating system has blocked the request.";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    case 999: return "Unknown Error";
    default: return "Unknown Error (fake-nvml: unmapped code)";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (current() == NULL)
        return NVML_ERROR_UNINITIALIZED;
    return copy_out(version, length, k_driver_version);
}

/* Real NVML answers this one even before init. */
nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    return copy_out(version, length, k_nvml_version);
}

/* CUDA 12.9, encoded as 1000 * major + 10 * minor. */
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    if (cudaDriverVersion == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = 12090;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    const struct fake_snapshot *s = current();

    if (s == NULL)
        return NVML_ERROR_UNINITIALIZED;
    if (deviceCount == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = s->count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    const struct fake_snapshot *s = current();

    if (s == NULL)
        return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= s->count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)&s->devs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    const struct fake_snapshot *s = current();
    unsigned int i;

    if (s == NULL)
        return NVML_ERROR_UNINITIALIZED;
    if (uuid == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < s->total; i++) { /* boards and MIG devices */
        if (strcmp(s->devs[i].uuid, uuid) == 0) {
            *device = (nvmlDevice_t)&s->devs[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* Accepts "dddddddd:bb:dd.f", "dddd:bb:dd.f" or "bb:dd.f" (hex, any case). */
nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId,
                                              nvmlDevice_t *device)
{
    const struct fake_snapshot *s = current();
    unsigned int domain = 0, bus, dev, fn, i;
    char extra;

    if (s == NULL)
        return NVML_ERROR_UNINITIALIZED;
    if (pciBusId == NULL || device == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (sscanf(pciBusId, "%x:%x:%x.%x%c", &domain, &bus, &dev, &fn, &extra) != 4) {
        domain = 0;
        if (sscanf(pciBusId, "%x:%x.%x%c", &bus, &dev, &fn, &extra) != 3)
            return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (domain != 0 || dev != 0 || fn != 0)
        return NVML_ERROR_NOT_FOUND;
    for (i = 0; i < s->count; i++) {
        if (s->devs[i].pci_bus == bus) {
            *device = (nvmlDevice_t)&s->devs[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (index == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = d->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (minorNumber == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = d->minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    return r != NVML_SUCCESS ? r : copy_out(name, length, d->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    return r != NVML_SUCCESS ? r : copy_out(uuid, length, d->uuid);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (pci == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (d->is_mig)
        d = &d->snap->devs[d->parent];
    memset(pci, 0, sizeof *pci);
    /* Same formats as NVML_DEVICE_PCI_BUS_ID_{LEGACY_,}FMT in nvml.h; the
     * legacy field only has room for a 4-digit domain. */
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", 0u,
             d->pci_bus, 0u);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", 0u, d->pci_bus,
             0u);
    pci->domain = 0;
    pci->bus = d->pci_bus;
    pci->device = 0;
    pci->pciDeviceId = 0x233010DEu; /* H100 SXM5, vendor NVIDIA */
    pci->pciSubSystemId = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode,
                                  unsigned int *pendingMode)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (currentMode == NULL || pendingMode == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *currentMode = *pendingMode = d->mig ? 1u : 0u; /* NVML_DEVICE_MIG_{EN,DIS}ABLE */
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (arch == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *arch = d->arch;
    return NVML_SUCCESS;
}

/* Instantaneous scripted power in mW. */
nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);
    int64_t t;

    if (r != NVML_SUCCESS)
        return r;
    if (power == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (d->fail_power)
        return NVML_ERROR_UNKNOWN;
    t = now_ns();
    *power = power_at(d, t);
    log_read(d, t, "power", *power);
    return NVML_SUCCESS;
}

/* Energy since driver load (or last reset_at) in mJ. */
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                 unsigned long long *energy)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);
    int64_t t;

    if (r != NVML_SUCCESS)
        return r;
    if (energy == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (d->hang_energy)
        for (;;)
            pause();
    if (!d->has_counter)
        return NVML_ERROR_NOT_SUPPORTED;
    if (d->fail_energy)
        return NVML_ERROR_UNKNOWN;
    t = now_ns();
    *energy = energy_at(d, t);
    log_read(d, t, "energy", *energy);
    return NVML_SUCCESS;
}

/* Scripted power as NVML's power fields: NVML_FI_DEV_POWER_AVERAGE and
 * NVML_FI_DEV_POWER_INSTANT, each where the board has it (fields=).  Both give
 * the scripted power at the time of the call (the fake models no averaging
 * window).  Any other field id, and any field of a MIG device, is
 * NOT_SUPPORTED in its own nvmlReturn; the call itself succeeds. */
nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                      nvmlFieldValue_t *values)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);
    int i;

    if (r != NVML_SUCCESS)
        return r;
    if (values == NULL || valuesCount <= 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < valuesCount; i++) {
        nvmlFieldValue_t *v = &values[i];
        int bit = v->fieldId == NVML_FI_DEV_POWER_AVERAGE   ? FAKE_FIELD_AVG
                  : v->fieldId == NVML_FI_DEV_POWER_INSTANT ? FAKE_FIELD_INST
                                                            : 0;
        int64_t t = now_ns();

        v->timestamp = t / 1000;
        v->latencyUsec = 0;
        if (d->is_mig || bit == 0 || !(d->fields & bit)) {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
            continue;
        }
        if (d->fail_power) {
            v->nvmlReturn = NVML_ERROR_UNKNOWN;
            continue;
        }
        v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        v->value.uiVal = power_at(d, t);
        v->nvmlReturn = NVML_SUCCESS;
        log_read(d, t, "power", v->value.uiVal); /* as a power usage read */
    }
    return NVML_SUCCESS;
}

/* SM count of a board (unless board_attrs=0) or of a MIG device. */
nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device,
                                        nvmlDeviceAttributes_t *attributes)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (attributes == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->is_mig && !d->board_attrs)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(attributes, 0, sizeof *attributes);
    attributes->multiprocessorCount = d->sm_count;
    return NVML_SUCCESS;
}

/* 7 on a board in MIG mode, 0 on one that is not (as NVML). */
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (count == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *count = d->mig ? NVML_MAX_MIG_DEVICES : 0;
    return NVML_SUCCESS;
}

/* The board's index-th MIG device; NOT_FOUND for a free slot below 7. */
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *migDevice)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r == NVML_ERROR_NOT_SUPPORTED ? NVML_ERROR_INVALID_ARGUMENT : r;
    if (migDevice == NULL || index >= NVML_MAX_MIG_DEVICES)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->mig)
        return NVML_ERROR_NOT_SUPPORTED;
    if (index >= d->mig_count)
        return NVML_ERROR_NOT_FOUND;
    *migDevice = (nvmlDevice_t)&d->snap->devs[d->mig_first + index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (isMigDevice == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    *isMigDevice = d->is_mig ? 1u : 0u;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                          nvmlDevice_t *device)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(migDevice, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (device == NULL || !d->is_mig)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)&d->snap->devs[d->parent];
    return NVML_SUCCESS;
}

/* GPU / compute instance id of a MIG device; NOT_SUPPORTED on a board. */
nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (id == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->is_mig)
        return NVML_ERROR_NOT_SUPPORTED;
    *id = d->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id)
{
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_dev(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (id == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->is_mig)
        return NVML_ERROR_NOT_SUPPORTED;
    *id = d->ci;
    return NVML_SUCCESS;
}

/* GPU instance profiles 1, 2, 3, 4 and 7 slices (ids 0..4) of a GPU of
 * Ampere or newer: the 7-slice one has mig_sm SMs, the others their share
 * (rounded down).  Other ids are INVALID_ARGUMENT, older GPUs and MIG handles
 * NOT_SUPPORTED. */
nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                 nvmlGpuInstanceProfileInfo_t *info)
{
    static const unsigned int slices[FAKE_GI_PROFILES] = {1, 2, 3, 4, 7};
    const struct nvmlDevice_st *d;
    nvmlReturn_t r = get_board(device, &d);

    if (r != NVML_SUCCESS)
        return r;
    if (info == NULL || profile >= FAKE_GI_PROFILES)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (d->arch < NVML_DEVICE_ARCH_AMPERE)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    info->id = profile;
    info->sliceCount = slices[profile];
    info->instanceCount = 7 / slices[profile];
    info->multiprocessorCount = d->mig_sm * slices[profile] / 7;
    return NVML_SUCCESS;
}
