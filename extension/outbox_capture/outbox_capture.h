/*
 * outbox_capture: what the trigger (outbox_capture.c) hands to the writer (write_event.c).
 */
#ifndef OUTBOX_CAPTURE_H
#define OUTBOX_CAPTURE_H

#include "postgres.h"

/* The columns capture() names, as its PL/pgSQL twin's INSERT does; the rest are defaults. */
typedef struct CapturedEvent
{
	text	   *event_type;
	text	   *entity;
	text	   *entity_id;
	Datum		data;
	Datum		old;			/* (Datum) 0 when there is none: stored as NULL */
} CapturedEvent;

/* Once per backend, when the library is loaded. */
extern void write_event_init(void);

/* Stores one event into outbox.captured_events (schema `outbox`, namespace nsp). */
extern void write_event(Oid nsp, const CapturedEvent *event);

/* outbox.<name>, or an error saying to migrate. */
extern Oid	outbox_relation(Oid nsp, const char *name);

#endif
