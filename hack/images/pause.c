/*
 * pause: the first process of every pod sandbox (kubelet's "sandbox image"), and the default
 * command of the project's test image. It holds the pod's namespaces open by doing nothing:
 * it waits for signals, reaps the zombies of processes re-parented to it (it is PID 1 when the
 * pod shares its PID namespace), and exits 0 on SIGINT or SIGTERM so a pod stops at once.
 *
 * Built static by hack/build-images.sh: gcc -Os -static -s -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "1"

static void on_stop(int sig) {
	(void)sig;
	_exit(0);
}

static void on_child(int sig) {
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int handle(int sig, void (*handler)(int), int flags) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) != 0) {
		perror("pause: sigaction");
		return -1;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc == 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-v") == 0)) {
		printf("pause %s (byoc-operator)\n", PAUSE_VERSION);
		return 0;
	}
	if (argc != 1) {
		fprintf(stderr, "usage: pause [--version]\n"
				"waits for SIGINT or SIGTERM (then exits 0), reaping children\n");
		return 2;
	}
	if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
	    handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART))
		return 1;
	for (;;)
		pause();
}
