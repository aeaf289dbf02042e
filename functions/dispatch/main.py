import functions_framework


@functions_framework.cloud_event
def dispatch(cloud_event):
    print("dispatch", cloud_event["id"])
