/*
 * A minimal C model of the protocol behind netmcore's `spawn_join_us` and
 * `parallel_tasks_per_s`, to read those figures against: what the same messages and forks
 * cost on this machine with nothing else (no registry, no encoding, no ledger, no zygote).
 *
 * A master M keeps warm workers, each forked by M and waiting on a socketpair. A requester R
 * (M's child) sends M a start; M hands the task to a warm worker W and answers R; R sends a
 * join; W runs an empty body, reports to M and exits; M reaps W, answers the join, and forks a
 * replacement warm worker. Every read busy-polls for SPIN microseconds (non-blocking) before
 * it sleeps, as netmcore's do.
 *
 *   spawn_join_model floor                      C fork + _exit + waitpid (the bench's floor)
 *   spawn_join_model seq   SPIN [PREFORK]       one start + join at a time
 *   spawn_join_model waves SPIN [PREFORK]       starts then joins in waves of 2
 *
 * With PREFORK > 0, M forks that many warm workers before the measurement and none during it:
 * the cost of the protocol with no fork in the measured loop at all. Each prints the median
 * microseconds per task over 400 tasks (after 20 to warm up).
 *
 * Build: gcc -O2 -o spawn_join_model tests/bench/spawn_join_model.c
 * Rounds interleaved with netmcore's own figures: python3 tests/bench/spawn_join_model.py
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TASKS 400
#define WARMUP 20
#define MAX_WORKERS 1024

static long spin_ns;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    _exit(2);
}

/* Reads one byte, busy-polling for spin_ns first. */
static char get(int fd) {
    char c;
    long end = now_ns() + spin_ns;
    do {
        ssize_t k = recv(fd, &c, 1, MSG_DONTWAIT);
        if (k == 1) return c;
        if (k == 0) _exit(3); /* the peer is gone */
        if (errno != EAGAIN) die("recv");
    } while (now_ns() < end);
    if (recv(fd, &c, 1, 0) != 1) _exit(3);
    return c;
}

static void put(int fd, char c) {
    if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) die("send");
}

static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return v[n / 2];
}

static int floor_fork(void) {
    double v[TASKS];
    for (int i = 0; i < TASKS + WARMUP; i++) {
        long t0 = now_ns();
        pid_t p = fork();
        if (p < 0) die("fork");
        if (p == 0) _exit(0);
        waitpid(p, NULL, 0);
        if (i >= WARMUP) v[i - WARMUP] = (now_ns() - t0) / 1e3;
    }
    printf("%.1f\n", median(v, TASKS));
    return 0;
}

/* The master's table of workers: 0 = empty slot, 1 = warm, 2 = running a task. */
static int wfd[MAX_WORKERS];
static pid_t wpid[MAX_WORKERS];
static int wstate[MAX_WORKERS];

static void fork_warm(int slot) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        close(sv[0]);
        get(sv[1]);     /* the task */
        put(sv[1], 'F'); /* an empty body, then the report */
        _exit(0);
    }
    close(sv[1]);
    wfd[slot] = sv[0];
    wpid[slot] = p;
    wstate[slot] = 1;
}

static void requester(int fd, int wave) {
    double v[TASKS];
    int rounds = TASKS / wave, warm = WARMUP / wave;
    for (int i = 0; i < rounds + warm; i++) {
        long t0 = now_ns();
        for (int k = 0; k < wave; k++) { put(fd, 'S'); get(fd); }
        for (int k = 0; k < wave; k++) { put(fd, 'J'); get(fd); }
        if (i >= warm) v[i - warm] = (now_ns() - t0) / 1e3 / wave;
    }
    printf("%.1f\n", median(v, rounds));
    fflush(stdout);
    put(fd, 'Q');
    _exit(0);
}

static int model(int wave, int prefork) {
    if (prefork > MAX_WORKERS) prefork = MAX_WORKERS;
    int target = prefork > 0 ? 0 : 2; /* warm workers kept during the measurement */
    int rs[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, rs) != 0) die("socketpair");
    pid_t r = fork();
    if (r < 0) die("fork");
    if (r == 0) { close(rs[0]); requester(rs[1], wave); }
    close(rs[1]);
    int rfd = rs[0];
    for (int i = 0; i < (prefork > 0 ? prefork : target); i++) fork_warm(i);
    int finished = 0, joins_waiting = 0;
    for (;;) {
        struct pollfd p[1 + MAX_WORKERS];
        int slot_of[1 + MAX_WORKERS];
        int n = 0;
        p[n].fd = rfd; p[n].events = POLLIN; n++;
        for (int i = 0; i < MAX_WORKERS; i++)
            if (wstate[i] == 2) { p[n].fd = wfd[i]; p[n].events = POLLIN; slot_of[n] = i; n++; }
        long end = now_ns() + spin_ns;
        int ready;
        do ready = poll(p, n, 0); while (ready == 0 && now_ns() < end);
        if (ready == 0) ready = poll(p, n, -1);
        if (ready < 0) die("poll");
        if (p[0].revents) {
            char c;
            if (recv(rfd, &c, 1, 0) != 1 || c == 'Q') break;
            if (c == 'S') {
                int s = -1;
                for (int i = 0; i < MAX_WORKERS && s < 0; i++) if (wstate[i] == 1) s = i;
                if (s < 0) { /* none warm: fork on demand */
                    for (int i = 0; i < MAX_WORKERS && s < 0; i++) if (wstate[i] == 0) s = i;
                    fork_warm(s);
                }
                put(wfd[s], 'R');
                wstate[s] = 2;
                put(rfd, 's');
            } else if (c == 'J') {
                if (finished > 0) { finished--; put(rfd, 'j'); } else joins_waiting++;
            }
        }
        for (int k = 1; k < n; k++) {
            if (!p[k].revents) continue;
            int i = slot_of[k];
            char c;
            if (recv(wfd[i], &c, 1, 0) != 1) die("report");
            close(wfd[i]);
            waitpid(wpid[i], NULL, 0);
            wstate[i] = 0;
            if (joins_waiting > 0) { joins_waiting--; put(rfd, 'j'); } else finished++;
            int warm = 0;
            for (int j = 0; j < MAX_WORKERS; j++) warm += wstate[j] == 1;
            if (warm < target) fork_warm(i);
        }
    }
    for (int i = 0; i < MAX_WORKERS; i++)
        if (wstate[i] != 0) { kill(wpid[i], SIGKILL); waitpid(wpid[i], NULL, 0); }
    waitpid(r, NULL, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "floor") == 0) return floor_fork();
    if (argc >= 3 && (strcmp(argv[1], "seq") == 0 || strcmp(argv[1], "waves") == 0)) {
        spin_ns = atol(argv[2]) * 1000;
        int prefork = argc >= 4 ? atoi(argv[3]) : 0;
        return model(strcmp(argv[1], "seq") == 0 ? 1 : 2, prefork);
    }
    fprintf(stderr, "usage: %s floor | seq SPIN_US [PREFORK] | waves SPIN_US [PREFORK]\n", argv[0]);
    return 1;
}
