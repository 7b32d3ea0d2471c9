// board: RalphSerial.h running as a board would, on a pseudo-terminal
// instead of a UART, against a real Ralph. The test that starts it passes
// the pty's master side as file descriptor 3.
//
//   board <board-id> <count>
//
// It subscribes to "cmd/#", publishes <count> QoS 1 text messages "n0",
// "n1", ... to "seq" as fast as the library's publish slots allow, prints
// "acked <count>" once all are acknowledged, prints "msg <topic> <payload>"
// for each message it receives, and exits when one arrives on "cmd/quit".
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../RalphSerial.h"

static const int kFd = 3;

static size_t writeFd(const uint8_t* p, size_t n, void*) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(kFd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return done;
    }
    done += (size_t)w;
  }
  return done;
}

static uint32_t nowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint32_t)(ts.tv_sec * 1000u + ts.tv_nsec / 1000000);
}

static unsigned long acked = 0;
static bool quit = false;

static void onAck(uint16_t) { acked++; }

static void onMessage(const char* topic, const uint8_t* payload, size_t len, bool) {
  printf("msg %s %.*s\n", topic, (int)len, (const char*)payload);
  fflush(stdout);
  if (strcmp(topic, "cmd/quit") == 0) quit = true;
}

static ralph::RalphSerial gateway(writeFd, 0);

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: board <board-id> <count>\n");
    return 2;
  }
  unsigned long count = strtoul(argv[2], 0, 10);
  gateway.setLog(false);
  gateway.onAck(onAck);
  gateway.onMessage(onMessage);
  gateway.subscribe("cmd/#", 1);
  // A new boot value for each run, as esp_random() gives a board.
  gateway.begin(argv[1], "host-1", static_cast<uint32_t>(getpid()) | 1u);
  unsigned long sent = 0;
  bool reported = false;
  while (!quit) {
    struct pollfd pfd = {kFd, POLLIN, 0};
    int r = poll(&pfd, 1, 5);
    if (r > 0 && (pfd.revents & POLLIN)) {
      uint8_t buf[512];
      ssize_t n = read(kFd, buf, sizeof buf);
      if (n <= 0) return 1;  // the gateway side is gone
      gateway.feed(buf, (size_t)n);
    }
    gateway.loop(nowMs());
    // Publish once the session is up, so that the subscription is in
    // place before the test sends commands.
    while (gateway.sessionUp() && sent < count) {
      char text[24];
      snprintf(text, sizeof text, "n%lu", sent);
      if (!gateway.publishText("seq", text, 1)) break;  // all slots wait for an ACK
      sent++;
    }
    if (!reported && acked == count) {
      printf("acked %lu\n", acked);
      fflush(stdout);
      reported = true;
    }
  }
  return 0;
}
