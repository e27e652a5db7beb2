/* Times the plugin's own prolog and epilog: loads libspank_carbon.so the way
 * slurmstepd does (dlopen) and calls slurm_spank_job_prolog / _epilog with a job's
 * environment, as the job_script context would, N times.
 *
 *   call_plugin PLUGIN N GPUS HOLD_MS OUT.tsv key=value...
 *
 * Writes one line per job to OUT.tsv: job, prolog ns, epilog ns. Needs no Slurm
 * daemon: spank_get_item and slurm_info are absent, so the plugin falls back to the
 * environment and standard error, exactly as it is built to. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*spank_fn)(void *, int, char **);

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s PLUGIN N GPUS HOLD_MS OUT.tsv key=value...\n", argv[0]);
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    spank_fn prolog = (spank_fn)dlsym(h, "slurm_spank_job_prolog");
    spank_fn epilog = (spank_fn)dlsym(h, "slurm_spank_job_epilog");
    if (!prolog || !epilog) {
        fprintf(stderr, "missing symbols\n");
        return 1;
    }
    int n = atoi(argv[2]);
    int hold_ms = atoi(argv[4]);
    FILE *out = fopen(argv[5], "w");
    if (!out) {
        perror(argv[5]);
        return 1;
    }
    int ac = argc - 6;
    char **av = argv + 6;
    char buf[32];
    setenv("SLURMD_NODENAME", "node1", 1);
    setenv("SLURM_NODELIST", "node1", 1);
    setenv("SLURM_JOB_GPUS", argv[3], 1);
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%d", 3000000 + i);
        setenv("SLURM_JOB_ID", buf, 1);
        long long t0 = now_ns();
        int rc1 = prolog(NULL, ac, av);
        long long t1 = now_ns();
        usleep(hold_ms * 1000);
        long long t2 = now_ns();
        int rc2 = epilog(NULL, ac, av);
        long long t3 = now_ns();
        if (rc1 || rc2) fprintf(stderr, "job %s: rc %d %d\n", buf, rc1, rc2);
        fprintf(out, "%s\t%lld\t%lld\n", buf, t1 - t0, t3 - t2);
    }
    fclose(out);
    return 0;
}
