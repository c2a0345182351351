/* jsonyaml.c - a cJSON tree as a libyaml document (see jsonyaml.h). */
#include "common/jsonyaml.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Well-formed UTF-8 as libyaml's reader wants it: no overlong forms, nothing past U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned c = s[i], w, v;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0)
			w = 2, v = c & 0x1F;
		else if ((c & 0xF0) == 0xE0)
			w = 3, v = c & 0x0F;
		else if ((c & 0xF8) == 0xF0)
			w = 4, v = c & 0x07;
		else
			return false;
		if (n - i < w)
			return false;
		for (unsigned k = 1; k < w; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			v = (v << 6) | (s[i + k] & 0x3F);
		}
		if ((w == 2 && v < 0x80) || (w == 3 && v < 0x800) || (w == 4 && v < 0x10000) ||
		    v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
			return false;
		i += w;
	}
	return true;
}

static int scalar(yaml_document_t *doc, const char *text, yaml_scalar_style_t style, int *ret)
{
	size_t len = strlen(text);

	if (!utf8_valid((const unsigned char *)text, len))
		return -EILSEQ;
	*ret = yaml_document_add_scalar(doc, NULL, (yaml_char_t *)text, (int)len, style);
	return *ret ? 0 : -ENOMEM;
}

int lb_json_to_yaml(const cJSON *item, yaml_document_t *doc, int *ret)
{
	const cJSON *c;
	char num[64];
	int r, k, v;

	if (cJSON_IsObject(item)) {
		*ret = yaml_document_add_mapping(doc, NULL, YAML_FLOW_MAPPING_STYLE);
		if (!*ret)
			return -ENOMEM;
		cJSON_ArrayForEach(c, item) {
			r = scalar(doc, c->string, YAML_DOUBLE_QUOTED_SCALAR_STYLE, &k);
			if (!r)
				r = lb_json_to_yaml(c, doc, &v);
			if (r)
				return r;
			if (!yaml_document_append_mapping_pair(doc, *ret, k, v))
				return -ENOMEM;
		}
		return 0;
	}
	if (cJSON_IsArray(item)) {
		*ret = yaml_document_add_sequence(doc, NULL, YAML_FLOW_SEQUENCE_STYLE);
		if (!*ret)
			return -ENOMEM;
		cJSON_ArrayForEach(c, item) {
			r = lb_json_to_yaml(c, doc, &v);
			if (r)
				return r;
			if (!yaml_document_append_sequence_item(doc, *ret, v))
				return -ENOMEM;
		}
		return 0;
	}
	if (cJSON_IsString(item))
		return scalar(doc, item->valuestring, YAML_DOUBLE_QUOTED_SCALAR_STYLE, ret);
	/* A number kept as written (lb_ctl_request_parse does): held to the file's rules. */
	if (cJSON_IsRaw(item))
		return scalar(doc, item->valuestring, YAML_PLAIN_SCALAR_STYLE, ret);
	if (cJSON_IsNumber(item)) {
		/* cJSON's own text for it: the checks read numbers as the text said them. */
		if (!cJSON_PrintPreallocated((cJSON *)item, num, sizeof(num), false))
			return -ENOMEM;
		return scalar(doc, num, YAML_PLAIN_SCALAR_STYLE, ret);
	}
	return scalar(doc, cJSON_IsTrue(item) ? "true" : cJSON_IsFalse(item) ? "false" : "null",
		      YAML_PLAIN_SCALAR_STYLE, ret);
}
