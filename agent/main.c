/*
 * main.c - keycache-agent: load the config, lock down the process, hold
 * data keys in locked memory and serve the Unix socket until told to stop.
 */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "agent.h"
#include "dispatch.h"
#include "keymem.h"
#include "metrics_http.h"
#include "log.h"
#include "reload.h"
#include "server.h"
#include "warmup.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: keycache-agent --config FILE [--socket PATH]\n"
            "\n"
            "Runs in the foreground, logging to stderr, until SIGTERM or "
            "SIGINT.\n"
            "  -c, --config FILE   INI configuration (required)\n"
            "  -s, --socket PATH   Unix socket to listen on (overrides\n"
            "                      $KEYCACHE_SOCKET and [agent] socket)\n"
            "  -t, --check         validate the config and key files, "
            "then exit\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n");
}

/* Core dumps and ptrace-style reads would expose cached keys. */
static int
harden_process(void)
{
    struct rlimit rl = {0, 0};

    if (setrlimit(RLIMIT_CORE, &rl) != 0) {
        log_error("cannot disable core dumps: %s", strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        log_error("prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Readiness: tell systemd (Type=notify), if it is listening. */
static void
on_ready(struct agent *a)
{
#ifdef HAVE_SYSTEMD
    (void)sd_notify(0, "READY=1\nSTATUS=serving");
#endif
}

/*
 * A socket passed by systemd socket activation, if any: then the unit's
 * .socket file owns the path, mode and group.  Returns the fd or -1.
 */
static int
activated_socket(void)
{
#ifdef HAVE_SYSTEMD
    int n = sd_listen_fds(1);

    if (n == 1 && sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1,
                                    NULL, 0) > 0) {
        return SD_LISTEN_FDS_START;
    }
    if (n > 1) {
        log_warn("socket activation passed %d sockets; using none", n);
    }
#endif
    return -1;
}

/* The socket is listening and signals are handled: start pre-warm. */
static int
on_serving(struct agent *a)
{
    if (warmup_start(a, on_ready) != 0) {
        log_error("cannot start pre-warm");
        return -1;
    }
    return 0;
}

static int
resolve_group(const char *name, gid_t *gid)
{
    struct group *gr;

    if (name == NULL) {
        return 0;
    }
    if ((gr = getgrnam(name)) == NULL) {
        return -1;
    }
    *gid = gr->gr_gid;
    return 0;
}

static const char *
pick_socket(const char *flag, const struct agent_config *cfg)
{
    const char *env = getenv("KEYCACHE_SOCKET");

    if (flag != NULL) {
        return flag;
    }
    if (env != NULL && *env != '\0') {
        return env;
    }
    return cfg->socket_path;
}

/* Takes ownership of cfg (a reload may replace it). */
static int
run(struct agent_config *cfg, const char *config_path,
    const char *socket_path, bool check)
{
    struct agent a;
    char err[512] = "";
    gid_t gid = (gid_t)-1;
    int fd = -1, r = 1;

    memset(&a, 0, sizeof(a));
    a.cfg = cfg;
    a.cfg_owned = cfg;
    a.config_path = config_path;
    agent_limits_from_config(&a.limits, cfg);
    if (keymem_init(cfg->capacity + cfg->nkeys, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if ((a.base = event_base_new()) == NULL) {
        log_error("cannot create the event loop");
        goto out;
    }
    if (warmup_parse_check(cfg, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (keyring_new(cfg, a.base, &a.keys, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (authz_policy_parse(cfg->allow_stats, &a.stats_policy, err,
                           sizeof(err)) != 0) {
        log_error("[agent] allow_stats: %s", err);
        goto out;
    }
    if (check) {
        fprintf(stderr, "keycache-agent: configuration OK (%zu keys)\n",
                cfg->nkeys);
        r = 0;
        goto out;
    }
    if (cache_new(cfg->capacity, NULL, &a.cache) != 0) {
        log_error("out of memory at start");
        goto out;
    }
    a.started_ms = cache_clock_monotonic();
    log_info("keycache-agent %s starting: %zu key aliases, capacity %zu",
             KC_VERSION, cfg->nkeys, cfg->capacity);
    if (resolve_group(cfg->socket_group, &gid) != 0) {
        log_error("socket_group '%s': no such group", cfg->socket_group);
        goto out;
    }
    if ((fd = activated_socket()) >= 0) {
        log_info("using the socket passed by systemd");
        socket_path = NULL; /* systemd owns the file: never unlink it */
    } else if (server_socket_open(socket_path, cfg->socket_mode, gid, &fd,
                                  err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out;
    }
    if (metrics_http_start(&a, err, sizeof(err)) != 0) {
        log_error("%s", err);
        close(fd);
        goto out;
    }
    /* Pre-warm (and so readiness) starts once the loop can take
     * signals and connections: see on_serving. */
    a.on_serving = on_serving;
    if (server_run(&a, fd, socket_path) == 0) {
        r = 0;
    }
    log_info("stopped; wiping cached keys");
out:
    metrics_http_stop();
    warmup_stop(&a);
    dispatch_shutdown(&a); /* flights first: they hold retired keyrings */
    reload_discard(&a);
    cache_free(a.cache);
    keyring_free(a.keys);
    authz_policy_clear(&a.stats_policy);
    config_free(a.cfg_owned);
    keymem_shutdown();
    if (a.base != NULL) {
        event_base_free(a.base);
    }
    return r;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"socket", required_argument, NULL, 's'},
        {"check", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct agent_config *cfg = NULL;
    const char *config_path = NULL, *socket_flag = NULL;
    char err[512], sock[4096];
    bool check = false;
    int ch;

    /* Before any other libevent call: evbuffers must wipe on free. */
    server_wiping_allocator_install();
    while ((ch = getopt_long(argc, argv, "c:s:thV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            socket_flag = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("keycache-agent %s\n", KC_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config_path == NULL || optind != argc) {
        fprintf(stderr, "keycache-agent: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    if (config_load(config_path, &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "keycache-agent: %s\n", err);
        return 1;
    }
    log_init(cfg->log_level, cfg->log_json);
    if (harden_process() != 0) {
        config_free(cfg);
        return 1;
    }
    /* The socket path is copied: a reload may free the first config. */
    snprintf(sock, sizeof(sock), "%s", pick_socket(socket_flag, cfg));
    return run(cfg, config_path, sock, check);
}
