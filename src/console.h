/*
 * The -i review console: over the spool, without listeners.  Lists captured
 * mails (paged, filterable), shows one, explains the relay decision (rule,
 * evidence, never-relay list, the caps it would consume) and sends one after
 * confirmation, counted against the same durable caps as the daemon.  Reads
 * commands from standard input, terminal or not; EOF ends it cleanly.
 */
#ifndef FOSR_CONSOLE_H
#define FOSR_CONSOLE_H

#include <stdbool.h>

struct cfg;

/*
 * Run the console until "quit" or EOF.  test_mode routes sends as -t does.
 * Opens (and closes) the event log itself.  Returns the process exit status.
 */
int	console_main(struct cfg *cfg, bool test_mode);

#endif
