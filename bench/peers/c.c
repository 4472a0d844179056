/*
 * The bare loop in C: one thread, epoll, the least a server can do per
 * message. The bench builds it when a C compiler is on PATH and shows it
 * beside the others (deno task bench --peers): the ceiling of this machine,
 * and a check on the bench itself, whose clients cannot be what limits a
 * slower server if they drive this one faster. A yardstick, not a server to
 * copy: no line limit, no timeouts, no raw framing, no shutdown.
 *
 * Build: cc -O2 -o /tmp/bare-loop bench/peers/c.c
 * Run:   /tmp/bare-loop [PORT]   (8080; 0: any)
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A connection: the start of a line whose "\n" has not come, and replies
 * the kernel has not taken yet (then it is not read until they are). */
struct conn {
  int fd;
  char *partial, *unsent;
  size_t partial_len, unsent_len, unsent_at;
};

static char stamp[64]; /* "[Sat Nov 28 06:26:46 2026] ", once a second */
static size_t stamp_len;
static time_t stamped = -1;

static void restamp(void) {
  time_t now = time(NULL);
  if (now == stamped) return;
  struct tm tm;
  localtime_r(&now, &tm);
  stamp_len = strftime(stamp, sizeof stamp, "[%a %b %e %H:%M:%S %Y] ", &tm);
  stamped = now;
}

static void grow(char **buffer, size_t need) {
  char *grown = realloc(*buffer, need);
  if (!grown) abort();
  *buffer = grown;
}

/* Appends the reply to each line that `data` ends to c->unsent, and keeps
 * the rest as c->partial. */
static void answer(struct conn *c, const char *data, size_t len) {
  grow(&c->partial, c->partial_len + len + 1);
  memcpy(c->partial + c->partial_len, data, len);
  c->partial_len += len;
  restamp();
  size_t start = 0;
  for (size_t i = 0; i < c->partial_len; i++) {
    if (c->partial[i] != '\n') continue;
    size_t end = i > start && c->partial[i - 1] == '\r' ? i - 1 : i;
    size_t need = c->unsent_len + stamp_len + end - start + 1;
    grow(&c->unsent, need);
    memcpy(c->unsent + c->unsent_len, stamp, stamp_len);
    memcpy(c->unsent + c->unsent_len + stamp_len, c->partial + start,
           end - start);
    c->unsent[need - 1] = '\n';
    c->unsent_len = need;
    start = i + 1;
  }
  memmove(c->partial, c->partial + start, c->partial_len - start);
  c->partial_len -= start;
}

/* Writes what it can; 1 if all is written, 0 if the kernel is full, -1 on
 * an error. */
static int flush(struct conn *c) {
  while (c->unsent_at < c->unsent_len) {
    ssize_t n = write(c->fd, c->unsent + c->unsent_at,
                      c->unsent_len - c->unsent_at);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->unsent_at += n;
  }
  c->unsent_at = c->unsent_len = 0;
  return 1;
}

static void finish(struct conn *c) {
  close(c->fd);
  free(c->partial);
  free(c->unsent);
  free(c);
}

/* Reads what is there and answers it; 0 once the connection is over. */
static int serve(int epoll, struct conn *c) {
  char buffer[1024];
  ssize_t n = read(c->fd, buffer, sizeof buffer);
  if (n < 0) return errno == EAGAIN;
  if (n == 0) { /* the end: the last line, without its "\n" */
    if (c->partial_len) answer(c, "\n", 1);
    flush(c); /* what the kernel does not take now is dropped */
    return 0;
  }
  answer(c, buffer, n);
  int flushed = flush(c);
  if (flushed == 0) { /* the kernel is full: wait to write, not to read */
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &ev);
  }
  return flushed >= 0;
}

static int drained(int epoll, struct conn *c) {
  int flushed = flush(c);
  if (flushed == 1) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epoll, EPOLL_CTL_MOD, c->fd, &ev);
  }
  return flushed >= 0;
}

int main(int argc, char **argv) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int on = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  struct sockaddr_in addr = {.sin_family = AF_INET};
  addr.sin_port = htons(argc > 1 ? atoi(argv[1]) : 8080);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof addr;
  if (bind(listener, (struct sockaddr *)&addr, size) || listen(listener, 511)) {
    perror("error: cannot listen");
    return 1;
  }
  getsockname(listener, (struct sockaddr *)&addr, &size);
  printf("bare loop listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
  fflush(stdout);
  int epoll = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &ev);
  struct epoll_event ready[256];
  for (;;) {
    int n = epoll_wait(epoll, ready, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = ready[i].data.ptr;
      if (!c) { /* the listener: accept what is waiting */
        int fd;
        while ((fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event in = {.events = EPOLLIN, .data.ptr = c};
          epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &in);
        }
        continue;
      }
      int open = ready[i].events & EPOLLOUT ? drained(epoll, c)
                                             : serve(epoll, c);
      if (!open) finish(c);
    }
  }
}
