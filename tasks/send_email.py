"""Send one email. The task is named after this file: ``send_email``.

Add a job from the shell:

    kongtask add-job send_email '{"to": "ada@example.com", "subject": "Hi", "body": "Welcome!"}'

Several recipients fan out into one job each, so a bounce for one address is retried on its own
and never sends the others a second copy:

    kongtask add-job send_email '{"to": ["ada@example.com", "bob@example.com"], "subject": "Hi"}'

With SMTP_HOST unset (in the environment or .env) the email is only logged, which is what you want
while developing. A plain ``def`` task runs in a thread, so blocking calls such as smtplib are fine.
"""

import os
import smtplib
from email.message import EmailMessage


def task(payload, helpers):
    recipients = payload.get("to")
    if isinstance(recipients, list):
        for address in recipients:
            job = helpers.add_job("send_email", {**payload, "to": address})
            helpers.logger.info("queued job %s for %s", job.id, address)
        return
    if not isinstance(recipients, str) or "@" not in recipients:
        # Raising fails the job: it is retried later with backoff, and the message is kept in
        # the job's last_error column.
        raise ValueError(f"payload needs 'to': an email address or a list of them, got {recipients!r}")

    message = EmailMessage()
    message["From"] = os.environ.get("MAIL_FROM", "kongtask@localhost")
    message["To"] = recipients
    message["Subject"] = payload.get("subject", "(no subject)")
    message.set_content(payload.get("body", ""))

    host = os.environ.get("SMTP_HOST")
    if not host:
        helpers.logger.info("SMTP_HOST is not set, so not sending: %r to %s", message["Subject"], recipients)
        return
    with smtplib.SMTP(host, int(os.environ.get("SMTP_PORT", "587")), timeout=30) as smtp:
        smtp.starttls()
        if os.environ.get("SMTP_USER"):
            smtp.login(os.environ["SMTP_USER"], os.environ.get("SMTP_PASSWORD", ""))
        smtp.send_message(message)
    helpers.logger.info("sent %r to %s (attempt %d)", message["Subject"], recipients, helpers.job.attempts)
