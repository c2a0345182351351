/*
 * jsonyaml.h - a cJSON tree as a libyaml document: the nodes libyaml would load from cJSON's
 * print of the tree, built without printing and scanning it again.  An apply of 1,000
 * listeners is 400 KB of JSON; printing it and reading it back as YAML cost a third of the
 * dataplane's time to apply it.
 */
#ifndef LB_JSONYAML_H
#define LB_JSONYAML_H

#include <cjson/cJSON.h>
#include <yaml.h>

/*
 * Add item (and all below it) to doc, which must be initialised; *ret is its node id.
 * Strings are double-quoted scalars; numbers, raw items (numbers kept as their text), true,
 * false and null plain ones, as in JSON text.  -EILSEQ when a string or key is not UTF-8 (libyaml would refuse its text), -ENOMEM.
 */
int lb_json_to_yaml(const cJSON *item, yaml_document_t *doc, int *ret);

#endif
