/* A pre-forking server (Apache prefork style) on 127.0.0.1 only. The parent builds a table in its heap,
 * listens on an ephemeral loopback port, forks W workers that accept and answer requests (each request reads
 * the table, bumps a hit counter in it -- copy-on-write of the parent's heap -- and builds its answer in a
 * fresh buffer), and counts the answers per worker in a shared scoreboard (MAP_SHARED|MAP_ANONYMOUS). The
 * parent is the client: R requests, then one QUIT per worker; it reaps the workers and exits.
 *   prefork-server [W=4] [R=200] [TABLE_KB=4096]
 * Recorded by benchmarks/realprograms.py (README.md, "Real programs"). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct entry { unsigned long hits; char text[120]; };

static struct entry *table;
static size_t entries;
static unsigned long *scoreboard;

static int full_read(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static void worker(int id, int lfd) {
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) continue;
        char req[16];
        if (full_read(c, req, sizeof req) < 0) { close(c); continue; }
        if (memcmp(req, "QUIT", 4) == 0) { close(c); _exit(0); }
        unsigned long key = strtoul(req, NULL, 10);
        size_t size = 8192 + (key % 4) * 4096;
        char *answer = malloc(size);
        size_t at = 0;
        for (size_t i = 0; at + 128 <= size; i++) {
            struct entry *e = &table[(key * 131 + i * 7) % entries];
            e->hits++;
            memcpy(answer + at, e->text, 120);
            at += 128;
        }
        write(c, &size, sizeof size);
        write(c, answer, size);
        free(answer);
        scoreboard[id]++;
        close(c);
    }
}

int main(int argc, char **argv) {
    int workers = argc > 1 ? atoi(argv[1]) : 4, requests = argc > 2 ? atoi(argv[2]) : 200;
    size_t table_kb = argc > 3 ? strtoul(argv[3], NULL, 10) : 4096;
    entries = table_kb * 1024 / sizeof(struct entry);
    table = malloc(entries * sizeof(struct entry));
    for (size_t i = 0; i < entries; i++) {
        table[i].hits = 0;
        snprintf(table[i].text, sizeof table[i].text, "entry %zu of the table", i);
    }
    scoreboard = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 64) < 0
        || getsockname(lfd, (struct sockaddr *)&addr, &len) < 0) {
        perror("prefork-server: listen on 127.0.0.1");
        return 1;
    }
    pid_t pids[64];
    if (workers > 64) workers = 64;
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] == 0) worker(w, lfd);
    }
    close(lfd);
    unsigned long bytes = 0;
    for (int r = 0; r < requests + workers; r++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        char req[16] = {0};
        snprintf(req, sizeof req, r < requests ? "%d" : "QUIT", r);
        write(c, req, sizeof req);
        size_t size;
        if (r < requests) {
            if (full_read(c, (char *)&size, sizeof size) < 0) { fprintf(stderr, "short answer\n"); return 1; }
            char *buf = malloc(size);
            if (full_read(c, buf, size) < 0) { fprintf(stderr, "short answer\n"); return 1; }
            bytes += size;
            free(buf);
        }
        close(c);
    }
    for (int w = 0; w < workers; w++) waitpid(pids[w], NULL, 0);
    unsigned long served = 0;
    for (int w = 0; w < workers; w++) served += scoreboard[w];
    printf("%lu requests served, %lu bytes\n", served, bytes);
    return served == (unsigned long)requests ? 0 : 1;
}
