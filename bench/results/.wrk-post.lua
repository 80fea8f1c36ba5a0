wrk.method = "POST"
wrk.body = [[{"type": "STATUS", "data": {"statusType": "bench", "status": "0"}}]]
wrk.headers["Content-Type"] = "application/json"
