/*
 * The shipped rules (etc/rules.yml), built into the binary: the rules used
 * when relay.rules names no file, as with the embedded defaults.
 */
#ifndef FOSR_RULES_DEFAULT_H
#define FOSR_RULES_DEFAULT_H

#define RULES_DEFAULT_NAME	"(built-in etc/rules.yml)"

extern const char rules_default_yaml[];

#endif
