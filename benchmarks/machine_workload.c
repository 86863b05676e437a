/* Lives a generated workload on this kernel: benchmarks/machine_workloads.py flattens foliosim's steps into the
 * program this reads from stdin, one operation per line, and sets the simulator's time beside this one.
 *
 *   M region pages hint    mmap a private anonymous region of `pages` pages, 2 MiB aligned; hint 1 MADV_HUGEPAGE,
 *                          2 MADV_NOHUGEPAGE, 0 none (which folio sizes its faults get is the THP settings' choice)
 *   W region first count   store a byte in each page        R region first count   load a byte of each page
 *   D/C/P region first count   madvise MADV_DONTNEED / MADV_COLD / MADV_PAGEOUT
 *   F child                fork: the child runs the lines after this one up to its X and exits there; the parent
 *                          goes on after that X (so parent and child run at the same time, as real processes do)
 *   X                      the end of a child's lines
 *   J child                the parent waits for that child
 *
 * Prints one line: wall nanoseconds from the first operation until every process has finished; minor faults of the
 * first process in that time and of all the children; CPU nanoseconds (user + system) of the first process in that
 * time and of all the children. Exit 2 on a bad program or a failed call. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REGIONS 64
#define PAGE 4096UL
#define ALIGN (2UL << 20)

struct op { char kind; long a, b, c; long end; };

static struct op *ops;
static long nops;
static char *base[MAX_REGIONS];
static long npages[MAX_REGIONS];
static pid_t *kids;
static long nkids;

static void die(const char *what, long line) {
    fprintf(stderr, "machine_workload: %s (line %ld)\n", what, line + 1);
    exit(2);
}

static void parse(void) {
    long cap = 1024, depth = 0, stack[4096];
    char line[256];
    ops = malloc(cap * sizeof *ops);
    while (fgets(line, sizeof line, stdin)) {
        struct op o = {0, 0, 0, 0, -1};
        if (sscanf(line, " %c %ld %ld %ld", &o.kind, &o.a, &o.b, &o.c) < 1) die("empty line", nops);
        if (nops == cap) ops = realloc(ops, (cap *= 2) * sizeof *ops);
        if (o.kind == 'F') {
            if (depth == 4096) die("forks nested too deep", nops);
            if (o.a < 0) die("bad child number", nops);
            if (o.a >= nkids) nkids = o.a + 1;
            stack[depth++] = nops;
        } else if (o.kind == 'X') {
            if (!depth) die("X without F", nops);
            ops[stack[--depth]].end = nops;
        } else if (o.kind == 'J') {
            if (o.a < 0) die("bad child number", nops);
        } else if (strchr("MWRDCP", o.kind)) {
            if (o.a < 0 || o.a >= MAX_REGIONS) die("bad region", nops);
        } else {
            die("unknown operation", nops);
        }
        ops[nops++] = o;
    }
    if (depth) die("F without X", nops);
    kids = calloc(nkids + 1, sizeof *kids);
}

static void check_range(const struct op *o, long i) {
    if (!base[o->a] || o->b < 0 || o->c < 0 || o->b + o->c > npages[o->a]) die("pages outside the region", i);
}

static void run(long from, long to) {
    volatile char sink = 0;
    for (long i = from; i < to; i++) {
        struct op *o = &ops[i];
        switch (o->kind) {
        case 'M': {
            size_t len = (size_t)o->b * PAGE;
            char *p = mmap(NULL, len + ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) die("mmap failed", i);
            p = (char *)(((unsigned long)p + ALIGN - 1) & ~(ALIGN - 1));
            if (o->c == 1 && madvise(p, len, MADV_HUGEPAGE)) die("MADV_HUGEPAGE failed", i);
            if (o->c == 2 && madvise(p, len, MADV_NOHUGEPAGE)) die("MADV_NOHUGEPAGE failed", i);
            base[o->a] = p;
            npages[o->a] = o->b;
            break;
        }
        case 'W':
            check_range(o, i);
            for (long k = 0; k < o->c; k++) base[o->a][(o->b + k) * PAGE] = (char)(i + 1);
            break;
        case 'R':
            check_range(o, i);
            for (long k = 0; k < o->c; k++) sink += base[o->a][(o->b + k) * PAGE];
            break;
        case 'D': case 'C': case 'P': {
            check_range(o, i);
            int advice = o->kind == 'D' ? MADV_DONTNEED : o->kind == 'C' ? MADV_COLD : MADV_PAGEOUT;
            if (o->c && madvise(base[o->a] + o->b * PAGE, (size_t)o->c * PAGE, advice)) die("madvise failed", i);
            break;
        }
        case 'F': {
            pid_t pid = fork();
            if (pid < 0) die("fork failed", i);
            if (pid == 0) {
                run(i + 1, o->end);
                _exit(0);
            }
            kids[o->a] = pid;
            i = o->end;  /* the loop's i++ steps over the X */
            break;
        }
        case 'J':
            if (o->a >= nkids || !kids[o->a]) die("J of a child not forked", i);
            if (waitpid(kids[o->a], NULL, 0) < 0) die("waitpid failed", i);
            kids[o->a] = 0;
            break;
        }
    }
}

static long cpu_ns(const struct rusage *r) {
    return (r->ru_utime.tv_sec + r->ru_stime.tv_sec) * 1000000000L
        + (r->ru_utime.tv_usec + r->ru_stime.tv_usec) * 1000L;
}

int main(void) {
    struct timespec t0, t1;
    struct rusage self0, self1, children;
    parse();
    getrusage(RUSAGE_SELF, &self0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run(0, nops);
    for (long k = 0; k < nkids; k++)
        if (kids[k] && waitpid(kids[k], NULL, 0) < 0) die("waitpid failed", nops);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &self1);
    getrusage(RUSAGE_CHILDREN, &children);
    printf("%ld %ld %ld %ld %ld\n", (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec),
           self1.ru_minflt - self0.ru_minflt, children.ru_minflt,
           cpu_ns(&self1) - cpu_ns(&self0), cpu_ns(&children));
    return 0;
}
